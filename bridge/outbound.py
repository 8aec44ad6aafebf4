"""Outbound: stream rows to their topics, the cursor moved only after Kafka acknowledged.

Each cycle reads the next batch of every stream past the commit horizon
(metro.bridge_batch), sends the rows (key, JSON value, position header),
waits until Kafka acknowledged all of them (acks=all, idempotent producer) and
then records the new cursors in one transaction (metro.bridge_ack). A crash
anywhere before that transaction means the batch is sent again: at least once,
with the position header to tell duplicates apart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError

from metro.kafka_settings import new_client
from metro.topics import POSITION_HEADER, Stream, streams

FLUSH_SLICE_SECONDS = 0.5
# Waiting this long for acknowledgements is worth telling the operator (and again
# every SLOW_ACK_REPEAT seconds); the batch is still in the producer's hands.
SLOW_ACK_SECONDS = 3.0
SLOW_ACK_REPEAT = 10.0


class DeliveryFailed(Exception):
    """Kafka did not acknowledge a batch; nothing of it was recorded as delivered."""


class Stopped(Exception):
    """The bridge was asked to stop while waiting for Kafka."""


def new_producer(bootstrap: str, delivery_timeout_ms: int = 30000) -> KafkaProducer:
    return new_client(
        KafkaProducer, bootstrap, acks="all", enable_idempotence=True,
        linger_ms=5, batch_size=512 * 1024, max_request_size=4 * 1024 * 1024,
        delivery_timeout_ms=delivery_timeout_ms, request_timeout_ms=10000,
        max_block_ms=5000, bootstrap_timeout_ms=5000, reconnect_backoff_max_ms=1000,
        client_id="metro-bridge")


@dataclass
class Batch:
    stream: Stream
    last_txid: str
    last_position: int
    futures: list[Any] = field(default_factory=list)


class Forwarder:
    """Moves stream rows to Kafka for a bridge that holds the lease on conn."""

    def __init__(self, conn: psycopg.Connection, producer: KafkaProducer, batch_size: int,
                 stop: threading.Event, slow_acks: Callable[[float], None]) -> None:
        self.conn = conn
        self.slow_acks = slow_acks
        self.producer = producer
        self.batch_size = batch_size
        self.stop = stop
        # Whether the last cycle filled a batch: more rows are likely waiting.
        self.full = False
        self.streams = streams(conn)
        self.cursors: dict[str, tuple[str, int]] = {
            stream: (str(txid), position) for stream, txid, position in conn.execute(
                "SELECT stream, txid, position FROM metro.bridge_cursors").fetchall()}

    def _send(self, stream: Stream) -> Batch | None:
        txid, position = self.cursors[stream.table]
        rows = self.conn.execute(
            "SELECT row_txid::text, row_position, key, value"
            " FROM metro.bridge_batch(%s, %s::xid8, %s, %s)",
            (stream.table, txid, position, self.batch_size)).fetchall()
        if not rows:
            return None
        send = self.producer.send
        # With one partition there is nothing to hash: skip the producer's partitioner.
        partition = 0 if len(self.producer.partitions_for(stream.topic)) == 1 else None
        futures = [send(stream.topic, key=key.encode(), value=value.encode(), partition=partition,
                        headers=[(POSITION_HEADER, str(row_position).encode())])
                   for _, row_position, key, value in rows]
        return Batch(stream, rows[-1][0], rows[-1][1], futures)

    def _await_acks(self, batches: list[Batch]) -> None:
        started = time.monotonic()
        next_report = SLOW_ACK_SECONDS
        while True:
            try:
                self.producer.flush(timeout=FLUSH_SLICE_SECONDS)
                break
            except KafkaTimeoutError:
                if self.stop.is_set():
                    raise Stopped from None
                waited = time.monotonic() - started
                if waited >= next_report:
                    self.slow_acks(waited)
                    next_report += SLOW_ACK_REPEAT
        for batch in batches:
            for future in batch.futures:
                if future.failed():
                    raise DeliveryFailed(f"Kafka did not acknowledge {batch.stream.topic}: "
                                         f"{future.exception}")

    def held_back(self) -> bool:
        """Whether committed rows wait behind the commit horizon (an older transaction runs)."""
        for stream in self.streams:
            row = self.conn.execute("SELECT metro.bridge_has_rows(%s, %s::xid8, %s)",
                                    (stream.table, *self.cursors[stream.table])).fetchone()
            if row and row[0]:
                return True
        return False

    def cycle(self) -> int:
        """Forward one batch of every stream; the number of rows Kafka acknowledged."""
        batches = [batch for batch in map(self._send, self.streams) if batch is not None]
        self.full = any(len(batch.futures) == self.batch_size for batch in batches)
        if not batches:
            return 0
        self._await_acks(batches)
        with self.conn.transaction():
            for batch in batches:
                self.conn.execute("SELECT metro.bridge_ack(%s, %s::xid8, %s, %s)",
                                  (batch.stream.table, batch.last_txid, batch.last_position,
                                   len(batch.futures)))
        for batch in batches:
            self.cursors[batch.stream.table] = (batch.last_txid, batch.last_position)
        return sum(len(batch.futures) for batch in batches)

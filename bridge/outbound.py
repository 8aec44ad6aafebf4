"""Outbound: stream rows to their topics, the cursor moved only after Kafka acknowledged.

Each cycle reads the next batch of every stream past the commit horizon
(metro.bridge_batch), sends the rows (key, JSON value, position header),
waits until Kafka acknowledged all of them (acks=all, idempotent producer) and
then records the new cursors in one transaction (metro.bridge_ack). A crash
anywhere before that transaction means the batch is sent again: at least once,
with the position header to tell duplicates apart.

Per key, Kafka gets the rows in commit order, which is their position order
(writers of one key are serialized by its row lock). The cursor moves in
(txid, position) order, so no row committing late is skipped; bridge_batch
returns a batch in position order together with the rows of the same keys
and a smaller position beyond it (a transaction that took its txid before it
waited for a card's lock), which are sent first and not again when the cursor
reaches them (after a restart they are: at least once).

A batch is sent only once PostgreSQL has flushed the WAL that was written when it
was read: a writer with synchronous_commit = off commits, and its rows are
visible, before they are durable; sent at once, a crash could take back a row
Kafka already has (and give its position to another). With durable writers the
wait is the next commit's flush; with none, at most the WAL writer's delay.

A row Kafka refuses for what it is (larger than a message may be, invalid) is
set aside in metro.bridge_outbound_dead_letters in the same transaction that
moves its stream's cursor past it: one bad row never stops its stream. Rows
larger than MAX_MESSAGE_BYTES are not even sent. Any other failure (Kafka
unavailable, timed out) holds back only the streams whose rows failed; the
others are acknowledged first.

A stream the database refuses to read (its table locked past the bridge's
lock_timeout by a VACUUM FULL or an ALTER TABLE, its SELECT privilege revoked,
a row that cannot be built), or whose topic Kafka does not give (missing where
topics are not created automatically, not allowed, an invalid name), rests on a
back-off of its own and is tried again; the other streams go on meanwhile,
acknowledged as usual (an exception out of the cycle would send their batches
again and again). Only a lost connection ends the session.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg
from kafka import KafkaProducer
from kafka import errors as kafka_errors
from kafka.errors import KafkaTimeoutError

from metro.backoff import Backoff
from metro.kafka_settings import new_client
from metro.topics import POSITION_HEADER, Stream, streams

T = TypeVar("T")

FLUSH_SLICE_SECONDS = 0.5
# How often the bridge asks whether the WAL of a batch read is flushed.
DURABLE_POLL_SECONDS = 0.002
# Waiting this long for acknowledgements is worth telling the operator (and again
# every SLOW_ACK_REPEAT seconds); the batch is still in the producer's hands.
SLOW_ACK_SECONDS = 3.0
SLOW_ACK_REPEAT = 10.0
# The largest message (key, value and headers) sent: a broker refuses messages
# above message.max.bytes (1,048,588 by default, with the batch overhead).
MAX_MESSAGE_BYTES = 1_000_000
# Errors about the record itself: sending it again cannot succeed.
REFUSED_RECORD_ERRORS: tuple[type[Exception], ...] = tuple(
    getattr(kafka_errors, name) for name in (
        "MessageSizeTooLargeError", "RecordTooLargeError", "InvalidRecordError",
        "CorruptRecordError", "CorruptRecordException", "InvalidTimestampError",
        "RecordListTooLargeError")
    if isinstance(getattr(kafka_errors, name, None), type))


class DeliveryFailed(Exception):
    """Kafka did not acknowledge a batch; nothing of it was recorded as delivered."""


class Stopped(Exception):
    """The bridge was asked to stop while waiting for Kafka."""


class TopicUnavailable(Exception):
    """Kafka gives no partitions for a stream's topic: nothing of the stream is sent."""

    def __init__(self, topic: str, error: BaseException) -> None:
        name = type(error).__name__
        text = str(error).strip() or name
        super().__init__(f"topic {topic}: {text if text.startswith(name) else f'{name}: {text}'}")
        self.topic = topic
        # No metadata in max_block_ms: an outage, or a topic the broker does not create.
        self.timed_out = isinstance(error, KafkaTimeoutError)


def lsn_value(lsn: str) -> int:
    """A pg_lsn's text (16/B374D848) as a number that orders as the LSN does."""
    high, low = lsn.split("/")
    return int(high, 16) << 32 | int(low, 16)


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
    # (row_txid, position, key, value) of every row read, and the future of each row sent
    # (None: not sent, too large).
    rows: list[tuple[str, int, str, str]] = field(default_factory=list)
    futures: list[Any] = field(default_factory=list)
    # Rows set aside: (row_txid, position, key, value, reason).
    refused: list[tuple[str, int, str, str, str]] = field(default_factory=list)
    failure: str | None = None
    # Rows of the batch proper (not ahead); positions sent ahead of the cursor; positions
    # sent ahead before that the cursor now reaches.
    read: int = 0
    ahead: set[int] = field(default_factory=set)
    reached: set[int] = field(default_factory=set)

    @property
    def delivered(self) -> int:
        return len(self.rows) - len(self.refused)


@dataclass
class Resting:
    """A stream the database refused to read, and when to try it again."""
    backoff: Backoff
    retry_at: float


class Forwarder:
    """Moves stream rows to Kafka for a bridge that holds the lease on conn."""

    def __init__(self, conn: psycopg.Connection, producer: KafkaProducer, batch_size: int,
                 stop: threading.Event, slow_acks: Callable[[float], None],
                 refused: Callable[[Stream, int, str], None] = lambda *_: None,
                 new_producer: Callable[[], Any] | None = None,
                 stalled: Callable[[Stream, Exception | None, float], None]
                 = lambda *_: None,
                 keep_lease: Callable[[], None] = lambda: None) -> None:
        self.conn = conn
        # Makes a producer in place of one a refused record left unusable (None: keep it).
        self.new_producer = new_producer
        self.slow_acks = slow_acks
        # Renews the lease while rows are sent one at a time (a Kafka round trip each).
        self.keep_lease = keep_lease
        # Told of every row set aside as an outbound dead letter.
        self.refused = refused
        # Told when a stream cannot be read or sent (the error, seconds until it is tried
        # again), and when it can again (None, 0).
        self.stalled = stalled
        self.resting: dict[str, Resting] = {}
        self.producer = producer
        self.batch_size = batch_size
        self.stop = stop
        # Whether the last cycle filled a batch: more rows are likely waiting.
        self.full = False
        self.streams = streams(conn)
        # Positions sent ahead of the cursor and acknowledged, per stream (bridge_batch):
        # not sent again when the cursor reaches them (after a restart they are: at least
        # once).
        self.early: dict[str, set[int]] = {}
        # The WAL position PostgreSQL last said it had flushed.
        self.flushed = 0
        self.cursors: dict[str, tuple[str, int]] = {
            stream: (str(txid), position) for stream, txid, position in conn.execute(
                "SELECT stream, txid, position FROM metro.bridge_cursors").fetchall()}

    def _read(self, stream: Stream, read: Callable[[Stream], T]) -> T | None:
        """read(stream), unless the stream rests; a database error other than a lost
        connection, or its topic unavailable, sets it resting (None)."""
        resting = self.resting.get(stream.table)
        if resting is not None and time.monotonic() < resting.retry_at:
            return None
        try:
            if resting is not None:
                resting.backoff.attempt()
            result = read(stream)
        except (psycopg.Error, TopicUnavailable) as error:
            if self.conn.broken:
                raise
            resting = resting or Resting(Backoff(), 0.0)
            delay = resting.backoff.next_delay()
            resting.retry_at = time.monotonic() + delay
            self.resting[stream.table] = resting
            self.stalled(stream, error, delay)
            return None
        if resting is not None:
            del self.resting[stream.table]
            self.stalled(stream, None, 0.0)
        return result

    def retry_in(self) -> float | None:
        """Seconds until the next resting stream is tried again (None: none rests)."""
        if not self.resting:
            return None
        return max(0.0, min(r.retry_at for r in self.resting.values()) - time.monotonic())

    def _send(self, stream: Stream) -> Batch | None:
        txid, position = self.cursors[stream.table]
        # The WAL insert position, read after the batch's snapshot: every commit the batch
        # sees lies before it. A sub-select, so that it is read once, not once a row.
        read = self.conn.execute(
            "SELECT row_txid::text, row_position, key, value, ahead,"
            " (SELECT pg_current_wal_insert_lsn()::text)"
            " FROM metro.bridge_batch(%s, %s::xid8, %s, %s)",
            (stream.table, txid, position, self.batch_size)).fetchall()
        if not read:
            return None
        self._await_durable(lsn_value(read[0][5]))
        # The cursor moves to the last row of the batch in (txid, position) order; rows of
        # the same keys beyond it (ahead) go first, all in position order, and are not sent
        # again when the cursor reaches them.
        early = self.early.setdefault(stream.table, set())
        last_txid, last_position = max((int(r[0]), r[1]) for r in read if not r[4])
        rows = [r[:4] for r in read if r[1] not in early]
        send = self.producer.send
        try:
            partitions = self.producer.partitions_for(stream.topic)
        except (kafka_errors.KafkaError, ValueError) as error:  # ValueError: invalid name
            raise TopicUnavailable(stream.topic, error) from error
        # With one partition there is nothing to hash: skip the producer's partitioner.
        partition = 0 if len(partitions) == 1 else None
        batch = Batch(stream, str(last_txid), last_position, rows)
        batch.read = sum(1 for r in read if not r[4])
        batch.ahead = {r[1] for r in read if r[4]}
        batch.reached = {r[1] for r in read if not r[4]} & early
        for row_txid, row_position, key, value in rows:
            key_bytes, value_bytes = key.encode(), value.encode()
            header = str(row_position).encode()
            size = len(key_bytes) + len(value_bytes) + len(POSITION_HEADER) + len(header)
            if size > MAX_MESSAGE_BYTES:
                batch.futures.append(None)
                batch.refused.append((row_txid, row_position, key, value,
                                      f"message of {size:,} bytes is larger than the"
                                      f" {MAX_MESSAGE_BYTES:,} bytes the bridge sends"))
                continue
            batch.futures.append(send(stream.topic, key=key_bytes, value=value_bytes,
                                      partition=partition, headers=[(POSITION_HEADER, header)]))
        return batch

    def _await_durable(self, lsn: int) -> None:
        """Return once PostgreSQL has flushed its WAL up to lsn."""
        while lsn > self.flushed:
            row = self.conn.execute("SELECT pg_current_wal_flush_lsn()::text").fetchone()
            self.flushed = lsn_value(row[0]) if row else self.flushed
            if lsn > self.flushed and self.stop.wait(DURABLE_POLL_SECONDS):
                raise Stopped

    def _await_acks(self, batches: list[Batch]) -> None:
        started = time.monotonic()
        next_report = SLOW_ACK_SECONDS
        pending = [f for batch in batches for f in batch.futures if f is not None]
        while True:
            try:
                self.producer.flush(timeout=FLUSH_SLICE_SECONDS)
            except KafkaTimeoutError:
                pass
            except kafka_errors.UnknownError:
                # A batch the broker refused as too large is being split and sent again:
                # its records' futures move to the new batches.
                self.stop.wait(0.01)
            # (A JSON-lines target's writes are done once flushed: they have no is_done.)
            pending = [f for f in pending if not getattr(f, "is_done", True)]
            if not pending:
                break
            if self.stop.is_set():
                raise Stopped from None
            waited = time.monotonic() - started
            if waited >= next_report:
                self.slow_acks(waited)
                next_report += SLOW_ACK_REPEAT
        # The broker refuses a whole record batch, and the producer refuses whatever
        # follows on that partition: the guilty rows are found by sending each alone,
        # through a new producer after each refusal only (one made before every row, about
        # 0.1 s each here, held a batch of thousands for minutes and let the lease expire).
        usable = False
        for batch in batches:
            for row, future in zip(batch.rows, batch.futures, strict=True):
                if future is None or not future.failed():
                    continue
                if isinstance(future.exception, REFUSED_RECORD_ERRORS):
                    if not usable:
                        self._replace_producer()
                    future = self._send_alone(batch.stream, row)
                    usable = not future.failed()
                    self.keep_lease()
                    if usable:
                        continue
                if isinstance(future.exception, REFUSED_RECORD_ERRORS):
                    row_txid, row_position, key, value = row
                    batch.refused.append((row_txid, row_position, key, value,
                                          "Kafka refused the message: "
                                          f"{type(future.exception).__name__}:"
                                          f" {str(future.exception).strip()}"))
                elif batch.failure is None:
                    batch.failure = (f"Kafka did not acknowledge {batch.stream.topic}: "
                                     f"{future.exception}")

    def _replace_producer(self) -> None:
        if self.new_producer is None:
            return
        self.producer.close(timeout=1)
        self.producer = self.new_producer()

    def _send_alone(self, stream: Stream, row: tuple[str, int, str, str]) -> Any:
        """Send one row in a record batch of its own and wait for its outcome."""
        _, row_position, key, value = row
        future = self.producer.send(stream.topic, key=key.encode(), value=value.encode(),
                                    headers=[(POSITION_HEADER, str(row_position).encode())])
        while not future.is_done:
            with contextlib.suppress(KafkaTimeoutError, kafka_errors.UnknownError):
                self.producer.flush(timeout=FLUSH_SLICE_SECONDS)
            if self.stop.is_set() and not future.is_done:
                raise Stopped
        return future

    def held_back(self) -> bool:
        """Whether committed rows of a readable stream wait behind the commit horizon (an
        older transaction runs). A resting stream is tried again by cycle() alone: that its
        rows can be counted says nothing of whether they can be read."""
        return any(self._read(stream, self._has_rows) for stream in self.streams
                   if stream.table not in self.resting)

    def _has_rows(self, stream: Stream) -> bool:
        row = self.conn.execute("SELECT metro.bridge_has_rows(%s, %s::xid8, %s)",
                                (stream.table, *self.cursors[stream.table])).fetchone()
        return bool(row and row[0])

    def cycle(self) -> int:
        """Forward one batch of every stream; the number of rows Kafka acknowledged (or
        that it refused and were set aside). Streams whose batch failed otherwise are not
        acknowledged, and DeliveryFailed is raised once the others are."""
        batches = [batch for batch in (self._read(stream, self._send) for stream in self.streams)
                   if batch is not None]
        self.full = any(batch.read == self.batch_size for batch in batches)
        if not batches:
            return 0
        self._await_acks(batches)
        done = [batch for batch in batches if batch.failure is None]
        with self.conn.transaction():
            for batch in done:
                for row_txid, row_position, key, value, reason in batch.refused:
                    self.conn.execute(
                        "SELECT metro.bridge_outbound_dead_letter(%s, %s::xid8, %s, %s, %s, %s)",
                        (batch.stream.table, row_txid, row_position, key, value, reason))
                self.conn.execute("SELECT metro.bridge_ack(%s, %s::xid8, %s, %s)",
                                  (batch.stream.table, batch.last_txid, batch.last_position,
                                   batch.delivered))
        for batch in done:
            self.cursors[batch.stream.table] = (batch.last_txid, batch.last_position)
            early = self.early[batch.stream.table]
            early -= batch.reached
            early |= batch.ahead
            for _, row_position, _, _, reason in batch.refused:
                self.refused(batch.stream, row_position, reason)
        failed = [batch.failure for batch in batches if batch.failure is not None]
        if failed:
            raise DeliveryFailed("; ".join(failed))
        # Progress: rows sent, and rows the cursor passed that were sent ahead before.
        return sum(len(batch.rows) + len(batch.reached) for batch in done)

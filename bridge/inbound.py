"""Inbound: TRAINTOPIC, RECHARGE and transaction_topic applied through their functions, once each.

The consumed offset lives in PostgreSQL (bridge_inbound_offsets) and moves in
the same transaction as the function calls it covers, so a message Kafka
delivers again is recognised by its offset and skipped. A message that cannot
be parsed, or whose function raises a metro or data error, is written to
bridge_dead_letters with the reason and the partition moves on.

A poll of transaction_topic is applied set-wise: the parseable payments go to
evaluate_transactions in one call. When that call refuses one of them, the poll
is applied message by message instead, so only the refused one is dead-lettered.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
from kafka import KafkaConsumer, TopicPartition

from metro.topics import INBOUND_TOPICS

from .messages import BATCH_CALLS, InvalidMessage, batch_call_for, call_for, parse_message

# SQLSTATE classes that mean "this message is wrong" rather than "try again":
# metro's MTxxx, data exceptions (22) and integrity violations (23).
MESSAGE_ERROR_CLASSES = ("MT", "22", "23")
PARTITION_REFRESH_SECONDS = 2.0
POLL_MS = 500


@dataclass
class BatchResult:
    applied: int = 0
    dead_lettered: int = 0
    skipped: int = 0


def _call(conn: psycopg.Connection, query: str, args: tuple[Any, ...]) -> str | None:
    """Run query in a savepoint; the reason it was refused, or None."""
    try:
        # Savepoint, call and release in one round trip.
        with conn.pipeline(), conn.transaction():
            conn.execute(query, args)
    except psycopg.Error as error:
        if not (error.sqlstate or "").startswith(MESSAGE_ERROR_CLASSES):
            raise
        return f"{error.sqlstate} {error.diag.message_primary or error}"
    return None


def _apply_one(conn: psycopg.Connection, topic: str, value: bytes | None) -> str | None:
    """Apply one message; the reason it was not applied, or None."""
    try:
        query, args = call_for(topic, value)
    except InvalidMessage as error:
        return str(error)
    return _call(conn, query, args)


def _apply_batch(conn: psycopg.Connection, topic: str,
                 records: list[Any]) -> list[str | None] | None:
    """Apply the parseable records in one call; per record the reason it was not
    applied, or None. None instead of the list when the call refused one of them."""
    messages: list[Any] = []
    reasons: list[str | None] = []
    for record in records:
        try:
            messages.append(parse_message(topic, record.value))
            reasons.append(None)
        except InvalidMessage as error:
            reasons.append(str(error))
    if messages and _call(conn, *batch_call_for(topic, messages)) is not None:
        return None
    return reasons


def _apply(conn: psycopg.Connection, topic: str, records: list[Any]) -> list[str | None]:
    """Apply records in order; per record the reason it was not applied, or None."""
    if topic in BATCH_CALLS and len(records) > 1:
        reasons = _apply_batch(conn, topic, records)
        if reasons is not None:
            return reasons
    return [_apply_one(conn, topic, record.value) for record in records]


def apply_records(conn: psycopg.Connection, topic: str, partition: int,
                  records: Iterable[Any]) -> BatchResult:
    """Apply the records of one partition and store the next offset, in one transaction.

    Records at offsets below the stored one were applied before and are skipped.
    """
    result = BatchResult()
    with conn.transaction():
        conn.execute("INSERT INTO metro.bridge_inbound_offsets"
                     " (topic, kafka_partition, next_offset) VALUES (%s, %s, 0)"
                     " ON CONFLICT DO NOTHING", (topic, partition))
        row = conn.execute("SELECT next_offset FROM metro.bridge_inbound_offsets"
                           " WHERE topic = %s AND kafka_partition = %s FOR UPDATE",
                           (topic, partition)).fetchone()
        assert row is not None
        next_offset = row[0]
        fresh = []
        for record in records:
            if record.offset < next_offset:
                result.skipped += 1
            else:
                fresh.append(record)
        for record, reason in zip(fresh, _apply(conn, topic, fresh), strict=True):
            if reason is None:
                result.applied += 1
            else:
                conn.execute(
                    "INSERT INTO metro.bridge_dead_letters (topic, kafka_partition, kafka_offset,"
                    " key, value, reason) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (topic, partition, record.offset, record.key, record.value, reason))
                result.dead_lettered += 1
            next_offset = record.offset + 1
        conn.execute(
            "UPDATE metro.bridge_inbound_offsets SET next_offset = %s, applied = applied + %s,"
            " dead_lettered = dead_lettered + %s, updated_at = now()"
            " WHERE topic = %s AND kafka_partition = %s",
            (next_offset, result.applied, result.dead_lettered, topic, partition))
    return result


class InboundConsumer:
    """A consumer of the inbound topics, positioned from the offsets stored in PostgreSQL."""

    def __init__(self, conn: psycopg.Connection, bootstrap: str) -> None:
        self.conn = conn
        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", max_poll_records=1000, fetch_max_wait_ms=200,
            client_id="metro-bridge-inbound", request_timeout_ms=15000,
            bootstrap_timeout_ms=5000)
        self._refreshed = 0.0

    def close(self) -> None:
        self.consumer.close()

    def _stored_offsets(self) -> dict[tuple[str, int], int]:
        rows = self.conn.execute("SELECT topic, kafka_partition, next_offset"
                                 " FROM metro.bridge_inbound_offsets").fetchall()
        return {(topic, partition): offset for topic, partition, offset in rows}

    def refresh_assignment(self) -> None:
        """Assign every partition of the inbound topics; new ones start at the stored offset."""
        self._refreshed = time.monotonic()
        wanted = {TopicPartition(topic, partition)
                  for topic in INBOUND_TOPICS
                  for partition in self.consumer.partitions_for_topic(topic)}
        current = self.consumer.assignment()
        if wanted <= current:
            return
        self.consumer.assign(sorted(wanted | current))
        stored = self._stored_offsets()
        for tp in wanted - current:
            offset = stored.get((tp.topic, tp.partition))
            if offset is None:
                self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, offset)

    def poll_once(self) -> BatchResult:
        """Fetch what is there (waiting up to POLL_MS) and apply it partition by partition."""
        if time.monotonic() - self._refreshed > PARTITION_REFRESH_SECONDS:
            self.refresh_assignment()
        total = BatchResult()
        if not self.consumer.assignment():
            time.sleep(POLL_MS / 1000)
            return total
        for tp, records in self.consumer.poll(timeout_ms=POLL_MS).items():
            result = apply_records(self.conn, tp.topic, tp.partition, records)
            total.applied += result.applied
            total.dead_lettered += result.dead_lettered
            total.skipped += result.skipped
        return total

    def run(self, stop: threading.Event) -> None:
        self.refresh_assignment()
        while not stop.is_set():
            self.poll_once()

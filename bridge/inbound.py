"""Inbound: TRAINTOPIC, RECHARGE and transaction_topic applied through their functions, once each.

The consumed offset lives in PostgreSQL (bridge_inbound_offsets) and moves in
the same transaction as the function calls it covers, so a message Kafka
delivers again is recognised by its offset and skipped. Those stored offsets are
the truth: on start the consumer is positioned from them. After each
transaction commits, the same offsets are also committed to the Kafka consumer
group (CONSUMER_GROUP, `metro-bridge` unless told otherwise), so
`kafka-consumer-groups --describe` and lag monitors see the bridge. The group
is written by a client of its own and never read: the consumer that fetches has
no group, so an unavailable group coordinator never holds up consumption. A
failed group commit is logged and made good by a later one.

Each message is handled on its own: one that cannot be parsed, or whose
function call fails for any reason but the database's unavailability, is
written to bridge_dead_letters with the reason (logged once at WARNING) and the
partition moves on in the same transaction. Only errors that say PostgreSQL
itself is unavailable or busy (connection lost, shutdown, serialization
failure, deadlock, out of resources: TRANSIENT) stop the poll; the runner then
reconnects and starts again from the stored offsets.

A message without a timestamp takes the Kafka record's own timestamp.

A poll of transaction_topic is applied set-wise: the parseable payments go to
evaluate_transactions in one call. When that call refuses one of them, the poll
is applied message by message instead, so only the refused one is dead-lettered.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from metro.kafka_settings import new_client
from metro.topics import BRIDGE_GROUP, INBOUND_TOPICS

from .messages import (
    BATCH_CALLS,
    CALLS,
    InvalidMessage,
    batch_call_for,
    parse_message,
    reason_text,
)

log = logging.getLogger("metro.bridge.inbound")

# The Kafka consumer group the bridge commits its consumed offsets to (for monitoring only).
CONSUMER_GROUP = BRIDGE_GROUP
# SQLSTATE classes that mean "PostgreSQL cannot do it now, try again": connection
# exceptions, transaction rollback (serialization failure, deadlock), insufficient
# resources, object not in prerequisite state (lock not available), operator
# intervention (shutdown, cancel), system errors. Everything else is the message's,
# but for the SQLSTATEs that say the setup is wrong and no message could be applied:
# the database read-only (a standby after a failover, 25006), the bridge's role no
# longer allowed to call the function (42501), the function missing (42883; the calls
# cast every argument, so no message picks another signature). Set aside as dead
# letters, every message would be lost to its function until replayed by hand.
TRANSIENT_CLASSES = ("08", "40", "53", "55", "57", "58")
SETUP_STATES = ("25006", "42501", "42883")
PARTITION_REFRESH_SECONDS = 2.0
POLL_MS = 500
GROUP_COMMIT_TIMEOUT_MS = 5000
# After a failed group commit, the next attempt waits this long (polls go on meanwhile).
GROUP_RETRY_SECONDS = 10.0


@dataclass
class BatchResult:
    applied: int = 0
    dead_lettered: int = 0
    skipped: int = 0
    # The partition's stored next offset once the transaction committed.
    next_offset: int | None = None
    # (offset, reason) of the messages dead-lettered.
    dead: list[tuple[int, str]] = field(default_factory=list)


def transient(error: BaseException) -> bool:
    """Whether error says the database is unavailable, busy or set up wrong rather than
    the message wrong."""
    if isinstance(error, psycopg.InterfaceError):
        return True
    if not isinstance(error, psycopg.Error):
        return False
    sqlstate = error.sqlstate
    if sqlstate is None:
        return isinstance(error, psycopg.OperationalError)
    return sqlstate.startswith(TRANSIENT_CLASSES) or sqlstate in SETUP_STATES


def _failure(error: BaseException) -> str:
    if isinstance(error, psycopg.Error) and error.sqlstate:
        return f"{error.sqlstate} {error.diag.message_primary or error}"
    return f"{type(error).__name__}: {str(error).strip()}"


def _call(conn: psycopg.Connection, query: str, args: tuple[Any, ...]) -> str | None:
    """Run query in a savepoint; the reason it was refused, or None. Raises only when the
    database is unavailable (transient)."""
    try:
        # Savepoint, call and release in one round trip.
        with conn.pipeline(), conn.transaction():
            conn.execute(query, args)
    except Exception as error:
        if transient(error) or conn.closed or conn.broken:
            raise
        return _failure(error)
    return None


def _parse(topic: str, record: Any) -> Any:
    """The parsed message of record; raises InvalidMessage with the reason."""
    try:
        return parse_message(topic, record.value, getattr(record, "timestamp", None))
    except InvalidMessage:
        raise
    except Exception as error:  # a parser bug must not stop the partition either
        log.exception("%s[%s]@%s: unexpected error parsing the value", topic,
                      getattr(record, "partition", "?"), record.offset)
        raise InvalidMessage(f"unexpected {_failure(error)}") from None


def _apply_one(conn: psycopg.Connection, topic: str, record: Any) -> str | None:
    """Apply one message; the reason it was not applied, or None."""
    try:
        message = _parse(topic, record)
    except InvalidMessage as error:
        return str(error)
    return _call(conn, CALLS[topic][1], tuple(vars(message).values()))


def _apply_batch(conn: psycopg.Connection, topic: str,
                 records: list[Any]) -> list[str | None] | None:
    """Apply the parseable records in one call; per record the reason it was not
    applied, or None. None instead of the list when the call refused one of them."""
    messages: list[Any] = []
    reasons: list[str | None] = []
    for record in records:
        try:
            messages.append(_parse(topic, record))
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
    return [_apply_one(conn, topic, record) for record in records]


def apply_records(conn: psycopg.Connection, topic: str, partition: int,
                  records: Iterable[Any]) -> BatchResult:
    """Apply the records of one partition and store the next offset, in one transaction.

    Records at offsets below the stored one are skipped as applied before. The consumer
    reads on from the stored offset, so they come only when Kafka's log went back below
    it (the topic deleted and created again, its log truncated) and the consumer started
    over at the log's beginning: that is logged at WARNING, with how to apply them. Each
    dead-lettered record is logged at WARNING once the transaction committed.
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
        stored = next_offset
        fresh = []
        skipped_from = None
        for record in records:
            if record.offset < next_offset:
                result.skipped += 1
                skipped_from = record.offset if skipped_from is None else skipped_from
            else:
                fresh.append(record)
        for record, reason in zip(fresh, _apply(conn, topic, fresh), strict=True):
            if reason is None:
                result.applied += 1
            else:
                reason = reason_text(reason)
                conn.execute(
                    "INSERT INTO metro.bridge_dead_letters (topic, kafka_partition, kafka_offset,"
                    " key, value, reason) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (topic, partition, record.offset, record.key, record.value, reason))
                result.dead_lettered += 1
                result.dead.append((record.offset, reason))
            next_offset = record.offset + 1
        conn.execute(
            "UPDATE metro.bridge_inbound_offsets SET next_offset = %s, applied = applied + %s,"
            " dead_lettered = dead_lettered + %s, updated_at = now()"
            " WHERE topic = %s AND kafka_partition = %s",
            (next_offset, result.applied, result.dead_lettered, topic, partition))
    result.next_offset = next_offset
    if skipped_from is not None:
        log.warning("%s[%d]: skipped %d message(s) from offset %d on, below the offset %d "
                    "stored as applied: Kafka's log went back (the topic created again, or its "
                    "log truncated?). To apply them, stop the bridge and set next_offset of "
                    "this partition in metro.bridge_inbound_offsets to %d", topic, partition,
                    result.skipped, skipped_from, stored, skipped_from)
    for offset, reason in result.dead:
        log.warning("dead-lettered %s[%d]@%d: %s", topic, partition, offset, reason)
    return result


class InboundConsumer:
    """A consumer of the inbound topics, positioned from the offsets stored in PostgreSQL,
    mirroring them to the Kafka consumer group `group` (None: to no group)."""

    def __init__(self, conn: psycopg.Connection, bootstrap: str,
                 group: str | None = CONSUMER_GROUP) -> None:
        self.conn = conn
        self.group = group
        self.consumer = new_client(
            KafkaConsumer, bootstrap, group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", max_poll_records=1000, fetch_max_wait_ms=200,
            client_id="metro-bridge-inbound", request_timeout_ms=15000,
            bootstrap_timeout_ms=5000)
        # Commits to the group only; it fetches nothing and joins nothing.
        self.group_client = None if not group else new_client(
            KafkaConsumer, bootstrap, group_id=group, enable_auto_commit=False,
            client_id="metro-bridge-group", request_timeout_ms=GROUP_COMMIT_TIMEOUT_MS,
            bootstrap_timeout_ms=5000)
        self._refreshed = 0.0
        self._absent: set[str] = set()  # inbound topics the cluster does not have
        # Offsets stored in PostgreSQL and not yet committed to the group.
        self._uncommitted: dict[TopicPartition, int] = {}
        self._group_failing = False
        self._group_retry_at = 0.0

    def close(self) -> None:
        self.consumer.close()
        if self.group_client is not None:
            self.group_client.close(autocommit=False)

    def _stored_offsets(self) -> dict[tuple[str, int], int]:
        rows = self.conn.execute("SELECT topic, kafka_partition, next_offset"
                                 " FROM metro.bridge_inbound_offsets").fetchall()
        return {(topic, partition): offset for topic, partition, offset in rows}

    def refresh_assignment(self) -> None:
        """Assign every partition of the inbound topics; new ones start at the stored offset
        (never at the group's: PostgreSQL holds the truth)."""
        self._refreshed = time.monotonic()
        partitions = {topic: self.consumer.partitions_for_topic(topic) or set()
                      for topic in INBOUND_TOPICS}
        self._tell_absent({topic for topic, found in partitions.items() if not found})
        wanted = {TopicPartition(topic, partition)
                  for topic, found in partitions.items() for partition in found}
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
                self._uncommitted[tp] = offset
        self.commit_group()

    def _tell_absent(self, absent: set[str]) -> None:
        """Say which inbound topics do not exist yet, and when they come: a cluster that
        creates topics only through its tools shows nothing else while it lacks them."""
        if absent - self._absent:
            log.info("no topic %s on Kafka yet: consumed from its first message once it "
                     "exists", ", ".join(sorted(absent - self._absent)))
        if self._absent - absent:
            log.info("topic %s exists now: consuming it",
                     ", ".join(sorted(self._absent - absent)))
        self._absent = absent

    def commit_group(self) -> None:
        """Commit the offsets PostgreSQL holds to the consumer group; failures are logged
        (once until the next success) and retried with the next commit."""
        if (self.group_client is None or not self._uncommitted
                or time.monotonic() < self._group_retry_at):
            return
        offsets = {tp: OffsetAndMetadata(offset, "", -1)
                   for tp, offset in self._uncommitted.items()}
        try:
            self.group_client.commit(offsets, timeout_ms=GROUP_COMMIT_TIMEOUT_MS)
        except Exception as error:  # KafkaError and anything else: the group is only a mirror
            if not self._group_failing:
                log.warning("could not commit offsets to consumer group %s (trying again "
                            "every %.0f s): %s", self.group, GROUP_RETRY_SECONDS,
                            str(error).strip() or type(error).__name__)
            self._group_failing = True
            self._group_retry_at = time.monotonic() + GROUP_RETRY_SECONDS
            return
        if self._group_failing:
            log.info("committing offsets to consumer group %s again", self.group)
        self._group_failing = False
        for tp, offset in offsets.items():
            if self._uncommitted.get(tp) == offset.offset:
                del self._uncommitted[tp]

    def poll_once(self) -> BatchResult:
        """Fetch what is there (waiting up to POLL_MS) and apply it partition by partition,
        each in its own transaction; then mirror the new offsets to the consumer group."""
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
            total.dead.extend(result.dead)
            if result.next_offset is not None:
                self._uncommitted[tp] = result.next_offset
        self.commit_group()
        return total

    def run(self, stop: threading.Event) -> None:
        self.refresh_assignment()
        while not stop.is_set():
            self.poll_once()

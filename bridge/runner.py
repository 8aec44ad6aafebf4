"""The bridge process: take the lease, forward streams, consume inbound topics, survive outages.

One PostgreSQL session holds the lease (a row of metro.bridge_state with the
session's backend and an expiry, taken and renewed through functions only
metro_bridge may execute; a killed bridge's lease is taken over as soon as its
backend is gone, a hung one's when it expires), LISTENs for the streams'
wake-up and reads and acknowledges the streams. The inbound
topics are consumed on a second session in a thread. Whenever PostgreSQL or
Kafka fails, everything is torn down, the error is reported, and the bridge
starts again from the durable cursors after a short back-off.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import psycopg
from kafka.errors import KafkaError

from metro import database, schema
from metro.backoff import Backoff
from metro.errors import MetroError
from metro.kafka_clients import absent_topic
from metro.kafka_settings import AuthenticationFailed, KafkaConfigError
from metro.topics import INBOUND_TOPICS, Stream, streams

from .inbound import CONSUMER_GROUP, InboundConsumer
from .jsonlines import JsonLinesTarget
from .outbound import DeliveryFailed, Forwarder, Stopped, TopicUnavailable, new_producer

log = logging.getLogger("metro.bridge")

CHANNEL = "metro_bridge"
# Advisory lock (int, int), per database: 'mtrb', 2 is held while the bridge sleeps,
# telling writers to NOTIFY (procedures/bridge.sql). The lease is not a lock: any role
# may take any advisory lock.
IDLE_KEY = (0x6D747262, 2)
# The lease lasts LEASE_TTL unless renewed; the bridge renews it every HEARTBEAT_SECONDS.
LEASE_TTL = timedelta(seconds=30)
HEARTBEAT_SECONDS = 5.0
PRUNE_BATCH = 50_000
# A statement of the bridge waits this long for a lock before it fails: a stream table
# locked by a VACUUM FULL or an ALTER TABLE then rests that stream alone
# (outbound.Forwarder), and pruning waits for its next round. An inbound call waiting
# for a card another transaction holds (a long load, a forgotten psql session) fails
# and is tried again from the stored offsets, rather than stall inbound unseen and
# hold up a stop.
LOCK_TIMEOUT = "500ms"
# After the last row, keep polling (backing off up to BUSY_POLL_MAX) for
# LINGER seconds before sleeping on NOTIFY: under steady load the bridge never
# sleeps, so writers never pay for a NOTIFY.
LINGER = 0.2
BUSY_POLL_MAX = 0.02
# After a batch that was not full, let rows gather this long before the next
# round: fewer, larger rounds cost the database (and the hot path) less.
GATHER = 0.02


def default_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class BridgeOptions:
    dsn: str
    kafka: str
    batch_size: int = 5000
    poll_interval: float = 1.0
    retention: timedelta = timedelta(days=1)
    prune_interval: float = 60.0
    lease_retry: float = 1.0
    inbound: bool = True
    holder: str = field(default_factory=default_holder)
    # Without Kafka: append the stream rows to this JSON-lines file instead, with the
    # same cursor (metro.bridge.jsonlines); the inbound topics are not consumed then.
    outbound_file: Path | None = None
    # The Kafka consumer group the inbound offsets are mirrored to, for kafka-consumer-groups
    # and lag monitors (None: none); the offsets stored in PostgreSQL stay the truth.
    consumer_group: str | None = CONSUMER_GROUP


def describe(error: BaseException, kafka: str) -> str:
    """One line saying what went wrong, for the terminal and bridge_state.last_error."""
    if isinstance(error, KafkaError | DeliveryFailed):
        return f"Kafka at {kafka}: {str(error).strip() or type(error).__name__}"
    if lease_lost(error):
        return "lost the lease: another bridge took it over"
    if isinstance(error, AuthenticationFailed | KafkaConfigError):
        return str(error)  # says where and what already
    if isinstance(error, database.OUTAGES):
        return database.outage_text(error)
    return f"{type(error).__name__}: {str(error).strip()}"


class LeaseLost(Exception):
    """Another bridge took the lease over (this one stalled past its expiry)."""


def lease_lost(error: BaseException) -> bool:
    return isinstance(error, LeaseLost) or (
        isinstance(error, psycopg.Error) and error.sqlstate == "MT012")


RETRIED = (*database.OUTAGES, KafkaError, DeliveryFailed, OSError, LeaseLost)


class Bridge:
    def __init__(self, options: BridgeOptions, stop: threading.Event | None = None,
                 say: Callable[[str], None] | None = None) -> None:
        self.options = options
        self.stop = stop or threading.Event()
        # Without a say callback the bridge logs: progress at INFO, trouble at WARNING.
        self.say = say or log.info
        self.warn = say or log.warning
        # Since when, monotonic, an outage lasts (None: none), and its first error; after
        # one, a line says when the bridge has caught up.
        self._outage_since: float | None = None
        self._outage_error = ""
        self._connected = False  # whether a session ever began (then a refusal is an outage)
        self._kafka_connected = False  # whether a producer was ever made (likewise)

    def run(self) -> None:
        """Run until stop is set; outages are reported and retried, never fatal."""
        backoff = Backoff()
        while not self.stop.is_set():
            backoff.attempt()
            try:
                self._session()
            except Stopped:
                break
            except (*RETRIED, psycopg.Error, AuthenticationFailed, KafkaConfigError) as error:
                if not self._retried(error):
                    raise
                self.report(error)
                delay = backoff.next_delay()
                self.say(f"retrying in {delay:.1f} s")
                self.stop.wait(delay)
        self.say("stopped")

    def _retried(self, error: BaseException) -> bool:
        """Whether run() waits error out. Kafka refusing the login or METRO_KAFKA_CONFIG
        unreadable stop the bridge before a first producer was made (a setting to fix:
        retrying would wait forever on it), and are outages after (credentials being
        rotated, a broker restarting without its users yet, the file being rewritten)."""
        if isinstance(error, AuthenticationFailed | KafkaConfigError):
            return self._kafka_connected
        return isinstance(error, RETRIED) or lease_lost(error)

    def report(self, error: BaseException, part: str = "") -> None:
        """Print the error and record it as the bridge's last error when PostgreSQL answers."""
        self._trouble((f"{part}: " if part else "") + describe(error, self.options.kafka))

    def _trouble(self, message: str) -> None:
        self.warn(message)
        if self._outage_since is None:
            self._outage_since, self._outage_error = time.monotonic(), message
        self._record_error(message)

    def _record_error(self, message: str) -> None:
        """Record message as the bridge's last error, when PostgreSQL answers."""
        try:
            with psycopg.connect(self.options.dsn, autocommit=True, connect_timeout=2) as conn:
                conn.execute("SELECT metro.bridge_report_error(%s)", (message,))
        except psycopg.Error:
            pass

    def _report_slow_acks(self, conn: psycopg.Connection, waited: float) -> None:
        self.report(DeliveryFailed(f"no acknowledgement for {waited:.0f} s; the rows stay in "
                                   "the outbox and the producer keeps retrying"))
        # Waiting for Kafka is no stall: keep the lease.
        self._renew_lease(conn)

    def _report_refused(self, stream: Stream, position: int, reason: str) -> None:
        self.warn(f"Kafka refused {stream.table} row {position}, set aside in "
                  f"metro.bridge_outbound_dead_letters: {reason}")

    def _report_stalled(self, stream: Stream, error: Exception | None,
                           retry_in: float) -> None:
        if error is None:
            self.say(f"{stream.table} goes on again")
            return
        if isinstance(error, TopicUnavailable):
            absent = error.timed_out and absent_topic(self.options.kafka, error.topic)
            trouble = (f"cannot send {stream.table}: {absent}" if absent
                       else f"cannot send {stream.table} to Kafka ({error})")
        else:
            trouble = f"cannot read {stream.table} ({database.first_line(error)})"
        self._trouble(f"{trouble}; trying it again in {retry_in:.1f} s, the other streams go on")

    def _renew_lease(self, conn: psycopg.Connection) -> None:
        row = conn.execute("SELECT metro.bridge_renew_lease(%s)", (LEASE_TTL,)).fetchone()
        if not row or not row[0]:
            raise LeaseLost("another bridge took the lease over")

    def _connect(self) -> psycopg.Connection:
        conn = database.service_connection(self.options.dsn, first=not self._connected,
                                           autocommit=True, connect_timeout=5,
                                           application_name="metro bridge")
        self._connected = True
        try:
            schema.require_current(conn)
        except MetroError:
            conn.close()
            raise
        return conn

    def _session(self) -> None:
        with self._connect() as conn:
            conn.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
            self._take_lease(conn)
            conn.execute(f"LISTEN {CHANNEL}")
            to_file = self.options.outbound_file
            producer = (new_producer(self.options.kafka) if to_file is None
                        else JsonLinesTarget(to_file))
            self._kafka_connected = True
            consumes = self.options.inbound and to_file is None
            session_over = threading.Event()
            inbound = threading.Thread(target=self._consume_inbound, args=(session_over,),
                                       name="metro-bridge-inbound", daemon=True)
            forwarder: Forwarder | None = None
            try:
                if consumes:
                    inbound.start()
                tables = ", ".join(s.table for s in streams(conn))
                self.say(f"holding the lease as {self.options.holder}; forwarding "
                         f"{tables} to {to_file or self.options.kafka}"
                         + (f"; consuming {', '.join(INBOUND_TOPICS)}" if consumes else ""))
                forwarder = Forwarder(
                    conn, producer, self.options.batch_size, self.stop,
                    lambda waited: self._report_slow_acks(conn, waited), self._report_refused,
                    None if to_file is not None else lambda: new_producer(self.options.kafka),
                    self._report_stalled, lambda: self._renew_lease(conn))
                self._forward(conn, forwarder)
            finally:
                # Whatever ended the session (a stop, an outage, a failure to begin it): no
                # inbound thread or producer outlives it.
                session_over.set()
                # close() flushes and raises when acknowledgements are still missing (a stop
                # while Kafka stalls): those rows stay in the outbox, their cursor unmoved.
                with contextlib.suppress(KafkaError):
                    (producer if forwarder is None else forwarder.producer).close(timeout=1)
                if inbound.is_alive():
                    inbound.join()
                if not conn.closed:
                    # Failing that, the lease goes with the session.
                    with contextlib.suppress(psycopg.Error):
                        conn.execute("SELECT metro.bridge_release_lease()")

    def _take_lease(self, conn: psycopg.Connection) -> None:
        """Wait until this session holds the lease; raise Stopped if asked to stop first."""
        waiting = False
        while True:
            row = conn.execute("SELECT metro.bridge_take_lease(%s, %s)",
                               (self.options.holder, LEASE_TTL)).fetchone()
            if row and row[0]:
                break
            if not waiting:
                row = conn.execute("SELECT holder FROM metro.bridge_state").fetchone()
                self.say(f"waiting for the lease held by {row[0] if row else 'another bridge'}")
                waiting = True
            if self.stop.wait(self.options.lease_retry):
                raise Stopped

    def _forward(self, conn: psycopg.Connection, forwarder: Forwarder) -> None:
        """Forward until stopped: poll while rows keep coming, else sleep until a writer
        notifies or poll_interval passes."""
        heartbeat = prune = last_rows = time.monotonic()
        delay = 0.0
        forwarded = 0  # rows forwarded in this session, for the caught-up line
        while not self.stop.is_set():
            now = time.monotonic()
            if now - heartbeat >= HEARTBEAT_SECONDS:
                self._renew_lease(conn)
                heartbeat = now
            if now - prune >= self.options.prune_interval:
                self._prune(conn)
                prune = now
            sent = forwarder.cycle()
            forwarded += sent
            if (not sent and self._outage_since is not None and not forwarder.resting
                    and not forwarder.held_back()):
                self._caught_up(forwarded)
            if sent:
                last_rows, delay = time.monotonic(), 0.0
                if not forwarder.full:
                    self.stop.wait(GATHER)
                continue
            if (time.monotonic() - last_rows < LINGER or forwarder.held_back()
                    or not self._sleep_on_notify(conn, forwarder)):
                delay = min(max(delay * 2, 0.001), BUSY_POLL_MAX)
                self.stop.wait(delay)
                continue
            last_rows, delay = time.monotonic(), 0.0

    def _caught_up(self, forwarded: int) -> None:
        """One line once nothing is left to forward after an outage."""
        assert self._outage_since is not None
        lasted = time.monotonic() - self._outage_since
        self.say(f"caught up: forwarded {forwarded} rows that waited; nothing pending "
                 f"{lasted:.1f} s after the outage began ({self._outage_error})")
        self._outage_since = None

    def _sleep_on_notify(self, conn: psycopg.Connection, forwarder: Forwarder) -> bool:
        """Sleep until a NOTIFY or poll_interval; False, at once, when rows may still come
        without one (a writer took the idle lock shared: it is committing)."""
        row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", IDLE_KEY).fetchone()
        if not row or not row[0]:
            return False
        try:
            for _ in conn.notifies(timeout=0):
                pass  # wake-ups for rows already forwarded
            # Rows committed before the lock was taken, by writers that did not notify.
            if forwarder.cycle() or forwarder.held_back():
                return False
            self._wait_for_wakeup(conn, forwarder.retry_in())
            return True
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s, %s)", IDLE_KEY)

    def _wait_for_wakeup(self, conn: psycopg.Connection, retry_in: float | None) -> None:
        # Wake up in time to renew the lease, whatever the poll interval, and to try a
        # resting stream again.
        deadline = time.monotonic() + min(self.options.poll_interval, HEARTBEAT_SECONDS,
                                          HEARTBEAT_SECONDS if retry_in is None else retry_in)
        while not self.stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            for _ in conn.notifies(timeout=min(remaining, 1.0), stop_after=1):
                return

    def _prune(self, conn: psycopg.Connection) -> None:
        """Prune delivered rows; when a stream table stays locked past LOCK_TIMEOUT (or the
        database refuses otherwise), say so and wait for the next round."""
        try:
            pruned_rows = conn.execute("SELECT stream, pruned FROM metro.bridge_prune(%s, %s)",
                                       (self.options.retention, PRUNE_BATCH)).fetchall()
        except psycopg.Error as error:
            if conn.broken:
                raise
            message = (f"pruning delivered rows failed ({database.first_line(error)}); trying"
                       f" again in {self.options.prune_interval:.0f} s")
            self.warn(message)
            self._record_error(message)
            return
        for stream, pruned in pruned_rows:
            if pruned:
                self.say(f"pruned {pruned} delivered rows of {stream}")

    def _consume_inbound(self, session_over: threading.Event) -> None:
        """Inbound topics into the functions, until the session ends. A bad message never
        gets here (it is dead-lettered); what does is an outage of PostgreSQL or Kafka,
        logged and retried from the offsets stored in PostgreSQL."""
        backoff = Backoff()
        while not session_over.is_set():
            backoff.attempt()
            try:
                with psycopg.connect(self.options.dsn, autocommit=True, connect_timeout=5,
                                     application_name="metro bridge inbound") as conn:
                    conn.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
                    consumer = InboundConsumer(conn, self.options.kafka,
                                               self.options.consumer_group)
                    try:
                        consumer.run(session_over)
                    finally:
                        consumer.close()
            except Exception as error:  # logged and retried: the thread must not die
                message = "inbound: " + describe(error, self.options.kafka)
                delay = backoff.next_delay()
                if isinstance(error, RETRIED):
                    log.error("%s; retrying in %.1f s", message, delay)
                else:
                    log.exception("%s; retrying in %.1f s", message, delay)
                self._record_error(message)
                session_over.wait(delay)

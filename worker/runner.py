"""The worker process: take the lease, keep derived data current, run maintenance, survive
outages.

Derived data (per-second history, station counters, card_export_stats, wait times) is
maintained by metro.run_rollup(): each call rolls up the source rows committed since its
cursor, behind the commit horizon, and moves the cursor in the same transaction. So the
worker itself holds no state: killed at any point (even kill -9) it loses and counts
nothing twice, and the next worker starts from the cursors.

One worker works at a time: the lease is the row of metro.worker_state, taken and renewed
through metro.worker_take_lease(), which only the role metro_worker (and the schema's
owner) may call. A worker that stops cleanly gives the lease up at once; one that dies
loses it when the lease expires, and a waiting worker takes over. The lease saves work:
exactness does not depend on it (run_rollup() serializes on its cursors).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import psycopg

from metro import database, schema
from metro.backoff import Backoff

log = logging.getLogger("metro.worker")

def default_holder() -> str:
    """host:pid:tag. The tag tells apart workers whose host and pid are alike, as two
    containers on the host's network, each its own pid 1: with the same name, both
    would renew one lease and both would work."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass(frozen=True)
class WorkerOptions:
    dsn: str
    # Rows of each source per run_rollup() call (one transaction).
    batch_size: int = 10_000
    # Pause after a round that rolled rows up (behind) and after an empty one (idle); a
    # full round is followed at once by the next.
    busy_interval: float = 0.2
    idle_interval: float = 1.0
    # Seconds between run_maintenance() calls (partitions ahead, retention).
    maintenance_interval: float = 600.0
    lease: timedelta = timedelta(seconds=15)
    # Renew the lease this often (well within the lease).
    heartbeat: float = 3.0
    # Seconds between attempts to take a lease another worker holds.
    lease_retry: float = 1.0
    holder: str = field(default_factory=default_holder)


@dataclass
class Pass:
    """What one pass did: rows rolled up per source, and maintenance's rows when it ran."""
    rolled_up: dict[str, int]
    maintenance: list[tuple[str, str, str | None, int | None]] | None = None

    @property
    def rows(self) -> int:
        return sum(self.rolled_up.values())


def roll_up(conn: psycopg.Connection, batch_size: int) -> tuple[dict[str, int], bool]:
    """One run_rollup() round: rows rolled up per source, and whether a source was full."""
    rows = conn.execute("SELECT source, rolled_up, full_round FROM metro.run_rollup(%s)",
                        (batch_size,)).fetchall()
    return {source: n for source, n, _ in rows}, any(full for _, _, full in rows)


def maintain(conn: psycopg.Connection) -> list[tuple[str, str, str | None, int | None]]:
    return [(r[0], r[1], r[2], r[3]) for r in conn.execute(
        "SELECT action, table_name, partition_name, rows FROM metro.run_maintenance()")]


def more_due(done: list[tuple[str, str, str | None, int | None]]) -> bool:
    """Whether run_maintenance() left rows past retention for another call (it deletes a
    bounded batch per call, each call its own transaction)."""
    return any(action == "more" for action, *_ in done)


def run_once(dsn: str, batch_size: int = WorkerOptions.batch_size,
             stop: Callable[[], bool] | None = None) -> Pass:
    """Roll up until caught up with what is committed, then run maintenance until it has
    nothing more due: `metro worker --once`, or a demo's last pass. Needs no lease
    (run_rollup() is exact whoever calls it). stop, asked after each round: once true, the
    pass ends there, what it rolled up committed and maintenance left out (the demo's
    Ctrl-C, which its signal handler turns into no exception)."""
    stopped = stop or (lambda: False)
    totals: dict[str, int] = {}
    with psycopg.connect(dsn, autocommit=True, application_name="metro worker --once") as conn:
        schema.require_current(conn)
        while True:
            rolled, full = roll_up(conn, batch_size)
            for source, n in rolled.items():
                totals[source] = totals.get(source, 0) + n
            if stopped():
                return Pass(totals)
            if not full:
                break
        done = maintain(conn)
        while more_due(done) and not stopped():
            done = [row for row in done if row[0] != "more"] + maintain(conn)
        return Pass(totals, done)


RETRIED = (*database.OUTAGES, OSError)


class LeaseLost(Exception):
    """Another worker holds the lease now (ours expired): go back to waiting."""


class Worker:
    def __init__(self, options: WorkerOptions, stop: threading.Event | None = None,
                 say: Callable[[str], None] | None = None) -> None:
        self.options = options
        self.stop = stop or threading.Event()
        # Without a say callback the worker logs: progress at INFO, trouble at WARNING.
        self.say = say or log.info
        self.warn = say or log.warning
        self.rolled_up = 0  # rows rolled up by this worker, for a caller's summary
        self._connected = False  # whether a session ever began (then a refusal is an outage)

    def run(self) -> None:
        """Run until stop is set; outages are reported and retried, never fatal."""
        backoff = Backoff()
        while not self.stop.is_set():
            backoff.attempt()
            try:
                self._session()
            except LeaseLost as lost:
                self.warn(str(lost))
            except RETRIED as error:
                self.report(error)
                delay = backoff.next_delay()
                self.say(f"retrying in {delay:.1f} s")
                self.stop.wait(delay)
        self.say("stopped")

    def report(self, error: BaseException) -> None:
        """Print the error and record it as the worker's last error when PostgreSQL answers."""
        if isinstance(error, database.OUTAGES):
            message = database.outage_text(error)
        else:
            message = f"{type(error).__name__}: {str(error).strip()}"
        self.warn(message)
        try:
            with psycopg.connect(self.options.dsn, autocommit=True, connect_timeout=2) as conn:
                conn.execute("SELECT metro.worker_report_error(%s)", (message,))
        except psycopg.Error:
            pass

    def _session(self) -> None:
        with database.service_connection(self.options.dsn, first=not self._connected,
                                         autocommit=True, connect_timeout=5,
                                         application_name="metro worker") as conn:
            self._connected = True
            schema.require_current(conn)
            if not self._take_lease(conn):
                return
            try:
                self._work(conn)
            finally:
                if not conn.closed:
                    with contextlib.suppress(psycopg.Error):
                        conn.execute("SELECT metro.worker_release_lease(%s)",
                                     (self.options.holder,))

    def _lease(self, conn: psycopg.Connection) -> tuple[bool, str | None]:
        row = conn.execute("SELECT held, lease_holder FROM metro.worker_take_lease(%s, %s)",
                           (self.options.holder, self.options.lease)).fetchone()
        assert row is not None
        return bool(row[0]), row[1]

    def _take_lease(self, conn: psycopg.Connection) -> bool:
        """Wait until this worker holds the lease; False if asked to stop first."""
        waiting = False
        while not self.stop.is_set():
            held, holder = self._lease(conn)
            if held:
                self.say(f"holding the lease as {self.options.holder}; rolling up "
                         "card_events, card_alert_export, transaction_decisions and "
                         "train_events")
                return True
            if not waiting:
                self.say(f"waiting for the lease held by {holder}")
                waiting = True
            self.stop.wait(self.options.lease_retry)
        return False

    def _work(self, conn: psycopg.Connection) -> None:
        """Roll up while rows wait, renew the lease, run maintenance when due."""
        renewed = time.monotonic()
        maintained = float("-inf")
        while not self.stop.is_set():
            now = time.monotonic()
            if now - renewed >= self.options.heartbeat:
                held, holder = self._lease(conn)
                if not held:
                    raise LeaseLost(f"lost the lease to {holder}; waiting for it again")
                renewed = now
            rolled, full = roll_up(conn, self.options.batch_size)
            rows = sum(rolled.values())
            self.rolled_up += rows
            if rows:
                log.debug("rolled up %s", rolled)
            # After a round, so that a worker started on a backlog first reads what
            # maintenance would otherwise keep back; with more due, the next loop calls
            # it again: a batch at a time.
            if now - maintained >= self.options.maintenance_interval:
                maintained = float("-inf") if self._maintain(conn) else time.monotonic()
            if full:
                continue
            self.stop.wait(self.options.busy_interval if rows else self.options.idle_interval)

    def _maintain(self, conn: psycopg.Connection) -> bool:
        """Run maintenance once and say what it did; whether another call is due."""
        done = maintain(conn)
        for action, table, partition, rows in done:
            if action == "created":
                self.say(f"created partition {partition}")
            elif action == "dropped":
                self.say(f"dropped partition {partition} of {table} (past its retention)")
            elif action == "deleted":
                noun = "row" if rows == 1 else "rows"
                self.say(f"deleted {rows:,} {noun} of {partition or table} past retention")
            elif action == "busy":
                self.warn(f"partition {partition} is in use by a long transaction; "
                          "it will be dropped by a later run")
            elif action == "not_rolled_up":
                self.say(f"partition {partition} of {table} is past its retention but holds "
                         "rows not rolled up yet; it will be dropped once they are")
            elif action == "kept_in_default":
                self.say(f"{table}: a day already has rows in {partition}; they stay there")
        return more_due(done)

"""Database connections of the direct sink, each an ordered channel of calls.

PipelineChannel drives libpq's pipeline mode itself (psycopg's `pgconn`): a call is
sent when it is due, followed by a Sync so that it is its own transaction, and its
result is read as soon as it arrives, which gives each call its own latency.
SerialChannel runs one call at a time through psycopg's async API.

A lost connection fails the calls in flight on it (their outcome is unknown, so
they count as errors), is reported in one line, and is reopened with backoff;
calls due meanwhile fail at once rather than queue without bound.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import pq

from metro.calls import Call
from metro.database import first_line
from metro.errors import DatabaseUnavailable, MetroError

from .events import Done, Event, Outcome
from .reference import NO_SCHEMA_HINT

APPLICATION_NAME = "metro-producers"
FIRST_RETRY_SECONDS = 0.5
MAX_RETRY_SECONDS = 8.0


@dataclass(slots=True)
class Pending:
    event: Event
    statement: Call
    arguments: tuple[object, ...]
    done: Done

    def finish(self, outcome: Outcome) -> None:
        self.done(self.event, outcome, time.monotonic())


def _encode(value: object) -> bytes:
    return (value.isoformat() if isinstance(value, datetime) else str(value)).encode()


class Channel:
    """One connection; subclasses say how calls travel on it."""

    def __init__(self, number: int, dsn: str, statements: Sequence[Call],
                 report: Callable[[str], None]) -> None:
        self.number = number
        self.dsn = dsn
        self.statements = statements
        self.report = report
        self.conn: psycopg.AsyncConnection[Any] | None = None
        self.closing = False
        self._reconnecting: asyncio.Task[None] | None = None

    async def start(self) -> None:
        try:
            await self._connect()
        except psycopg.OperationalError as error:
            raise DatabaseUnavailable(
                f"cannot connect to PostgreSQL: {first_line(error)}") from None

    async def _connect(self) -> None:
        conn = await psycopg.AsyncConnection.connect(
            self.dsn, autocommit=True, application_name=APPLICATION_NAME)
        try:
            self._prepare(conn.pgconn)
        except BaseException:
            await conn.close()
            raise
        self._attach(conn)

    def _prepare(self, pgconn: pq.abc.PGconn) -> None:
        """Prepare every statement once per connection; a missing function stops the run."""
        for statement in self.statements:
            result = pgconn.prepare(statement.name.encode(), statement.numbered_sql.encode())
            if result.status == pq.ExecStatus.FATAL_ERROR:
                raise MetroError(f"cannot prepare {statement.name}: {_error_text(result)} "
                                 f"({NO_SCHEMA_HINT})")

    def _attach(self, conn: psycopg.AsyncConnection[Any]) -> None:
        raise NotImplementedError

    @property
    def up(self) -> bool:
        return self.conn is not None

    def submit(self, item: Pending) -> None:
        if self.conn is None:
            item.finish(Outcome.error("connection down"))
        else:
            self._send(item)

    def _send(self, item: Pending) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Nothing to push by default."""

    def in_flight(self) -> int:
        raise NotImplementedError

    def _fail_all(self, reason: str) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        self.closing = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        self._fail_all("abandoned at shutdown")
        await self._disconnect()

    async def _disconnect(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            await conn.close()

    def _lost(self, error: BaseException) -> None:
        """Fail what was in flight and reconnect in the background."""
        if self.conn is None:
            return
        self.report(f"connection {self.number} lost: {first_line(error)}; "
                    f"{self.in_flight()} calls in flight counted as errors, reconnecting")
        self._forget_connection()
        self._fail_all("connection lost")
        if not self.closing:
            self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    def _forget_connection(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None and not conn.closed:
            conn.pgconn.finish()

    async def _reconnect(self) -> None:
        delay, attempts = FIRST_RETRY_SECONDS, 0
        while not self.closing:
            await asyncio.sleep(delay)
            attempts += 1
            try:
                await self._connect()
            except (psycopg.OperationalError, MetroError) as error:
                delay = min(delay * 2, MAX_RETRY_SECONDS)
                self.report(f"connection {self.number}: reconnect failed ({first_line(error)});"
                            f" next try in {delay:g} s")
                continue
            self.report(f"connection {self.number} restored after {attempts} attempt(s)")
            return


class PipelineChannel(Channel):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending: deque[Pending] = deque()  # calls sent, in order
        self._result: pq.abc.PGresult | None = None
        self._writing = False

    def _attach(self, conn: psycopg.AsyncConnection[Any]) -> None:
        pgconn = conn.pgconn
        pgconn.nonblocking = 1
        pgconn.enter_pipeline_mode()
        self.conn = conn
        asyncio.get_running_loop().add_reader(pgconn.socket, self._readable)

    def in_flight(self) -> int:
        return len(self._pending)

    def _send(self, item: Pending) -> None:
        assert self.conn is not None
        pgconn = self.conn.pgconn
        try:
            pgconn.send_query_prepared(item.statement.name.encode(),
                                       [_encode(value) for value in item.arguments])
            pgconn.pipeline_sync()
        except psycopg.OperationalError as error:
            item.finish(Outcome.error("connection lost"))
            self._lost(error)
            return
        self._pending.append(item)

    def flush(self) -> None:
        if self.conn is None or self._writing:
            return
        try:
            if self.conn.pgconn.flush():  # more to send: finish when the socket takes it
                self._writing = True
                asyncio.get_running_loop().add_writer(self.conn.pgconn.socket, self._writable)
        except psycopg.OperationalError as error:
            self._lost(error)

    def _writable(self) -> None:
        if self.conn is None:
            return
        try:
            if not self.conn.pgconn.flush():
                self._stop_writing()
        except psycopg.OperationalError as error:
            self._lost(error)

    def _stop_writing(self) -> None:
        if self._writing and self.conn is not None:
            asyncio.get_running_loop().remove_writer(self.conn.pgconn.socket)
        self._writing = False

    def _readable(self) -> None:
        if self.conn is None:
            return
        pgconn = self.conn.pgconn
        try:
            pgconn.consume_input()
            # Per call: its result, a NULL that ends it, then the Sync's result.
            while self._pending and not pgconn.is_busy():
                result = pgconn.get_result()
                if result is None:
                    if self._result is None:
                        break  # nothing more has arrived
                    continue
                if result.status == pq.ExecStatus.PIPELINE_SYNC:
                    self._complete(self._pending.popleft(), self._result)
                    self._result = None
                else:
                    self._result = result
        except psycopg.OperationalError as error:
            self._lost(error)

    def _complete(self, item: Pending, result: pq.abc.PGresult | None) -> None:
        if result is None or result.status == pq.ExecStatus.PIPELINE_ABORTED:
            item.finish(Outcome.error("call aborted"))
        elif result.status == pq.ExecStatus.FATAL_ERROR:
            item.finish(Outcome.error(_error_text(result)))
        elif not item.statement.decision:
            item.finish(Outcome.of_decision(True, "recorded"))
        else:
            message = result.get_value(0, 1)
            item.finish(Outcome.of_decision(result.get_value(0, 0) == b"t",
                                            message.decode() if message else ""))

    def _forget_connection(self) -> None:
        if self.conn is not None and not self.conn.closed:
            loop = asyncio.get_running_loop()
            loop.remove_reader(self.conn.pgconn.socket)
            self._stop_writing()
        super()._forget_connection()

    def _fail_all(self, reason: str) -> None:
        pending, self._pending = self._pending, deque()
        self._result = None
        for item in pending:
            item.finish(Outcome.error(reason))

    async def _disconnect(self) -> None:
        self._forget_connection()


def _error_text(result: pq.abc.PGresult) -> str:
    sqlstate = result.error_field(pq.DiagnosticField.SQLSTATE) or b""
    message = result.error_field(pq.DiagnosticField.MESSAGE_PRIMARY) or result.error_message
    return f"{sqlstate.decode()} {message.decode().strip()}".strip()


class SerialChannel(Channel):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._queue: deque[Pending] = deque()
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None

    def _attach(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.conn = conn
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._work())

    def in_flight(self) -> int:
        return len(self._queue)

    def _send(self, item: Pending) -> None:
        self._queue.append(item)
        self._wake.set()

    async def _work(self) -> None:
        while not self.closing:
            if not self._queue or self.conn is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            item = self._queue[0]
            try:
                cursor = await self.conn.execute(item.statement.sql, item.arguments, prepare=True)
                row = await cursor.fetchone() if item.statement.decision else None
            except psycopg.OperationalError as error:
                self._lost(error)
                continue
            except psycopg.Error as error:
                outcome = Outcome.error(f"{error.sqlstate or ''} {first_line(error)}".strip())
            else:
                outcome = (Outcome.of_decision(bool(row[0]), row[1]) if row is not None
                           else Outcome.of_decision(True, "recorded"))
            if self._queue and self._queue[0] is item:
                self._queue.popleft()
                item.finish(outcome)

    def _fail_all(self, reason: str) -> None:
        queue, self._queue = self._queue, deque()
        for item in queue:
            item.finish(Outcome.error(reason))

    async def close(self) -> None:
        await super().close()
        if self._worker is not None:
            self._worker.cancel()

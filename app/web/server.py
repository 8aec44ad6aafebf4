"""The dashboard's web server: the page, its live feed (server-sent events) and /metrics.

Routes:
- `/`              the page (static/index.html; its script and style ship beside it)
- `/events`        server-sent events: one `snapshot` event a second, JSON
- `/api/snapshot`  the same snapshot once
- `/metrics`       Prometheus text format, queried on each scrape
- `/healthz`       `ok` when the database answers

All pages share one sampler: however many browsers watch, the database gets one set
of queries a second. The server reads as metro_reader only.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psycopg
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from metro import database
from metro.errors import MetroError

from . import metrics, queries

STATIC_DIR = Path(__file__).resolve().with_name("static")
REFRESH_SECONDS = 1.0
# Snapshots younger than this are shared between pages instead of queried again.
SHARE_SECONDS = 0.5
CONNECT_TIMEOUT = 5
STATEMENT_TIMEOUT = "5s"

log = logging.getLogger(__name__)


class DashboardError(MetroError):
    """The dashboard cannot start: port taken, database or its views missing."""


def reader_connection(dsn: str) -> psycopg.Connection:
    """An autocommit connection acting as metro_reader, with a statement timeout."""
    conn = database.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                            application_name="metro dashboard")
    try:
        queries.read_as_reader(conn)
        conn.execute("SELECT set_config('statement_timeout', %s, false)", (STATEMENT_TIMEOUT,))
    except queries.NotAReader as error:
        conn.close()
        raise DashboardError(str(error)) from None
    except BaseException:
        conn.close()
        raise
    return conn


class Sampler:
    """Takes snapshots through one connection, shared by every page; reconnects after a
    failure and reports it in the snapshot instead of failing the feed."""

    def __init__(self, connect: Callable[[], psycopg.Connection], layout: queries.Layout) -> None:
        self._connect = connect
        self._layout = layout
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()
        self._last: dict[str, Any] | None = None
        self._taken = 0.0

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            if self._last is not None and time.monotonic() - self._taken < SHARE_SECONDS:
                return self._last
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = self._connect()
                result = queries.snapshot(self._conn, self._layout)
            except (psycopg.Error, MetroError, OSError) as error:
                message = " ".join(str(error).split())
                log.warning("dashboard: database not answering: %s", message)
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                result = {"error": f"database not answering: {message}"}
            self._last, self._taken = result, time.monotonic()
            return result

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _until_next_refresh(refresh: float) -> float:
    """Seconds to sleep so refreshes land just after a second ends (its counts are final)."""
    if refresh < 1.0:
        return refresh
    now = time.time()
    return max(0.05, (int(now) + refresh + 0.1) - now)


def create_app(dsn: str, kafka: str | None = None, refresh: float = REFRESH_SECONDS) -> Starlette:
    layout = queries.Layout(queries.line_order())
    sampler = Sampler(lambda: reader_connection(dsn), layout)
    collector = metrics.MetroCollector(lambda: reader_connection(dsn), kafka)
    registry = metrics.registry(collector)

    async def index(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    async def snapshot(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(sampler.snapshot))

    async def events(request: Request) -> Response:
        async def stream() -> AsyncIterator[str]:
            yield "retry: 2000\n\n"
            while True:
                data = await run_in_threadpool(sampler.snapshot)
                yield f"event: snapshot\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
                await asyncio.sleep(_until_next_refresh(refresh))

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    def scrape(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> Response:
        data = await run_in_threadpool(sampler.snapshot)
        if "error" in data:
            return PlainTextResponse(data["error"], status_code=503)
        return PlainTextResponse("ok")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        sampler.close()
        collector.close()

    return Starlette(routes=[
        Route("/", index),
        Route("/events", events),
        Route("/api/snapshot", snapshot),
        Route("/metrics", scrape),
        Route("/healthz", healthz),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ], lifespan=lifespan)


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, or a one-line error when the port is taken."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise DashboardError(f"cannot listen on {host}: {error.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise DashboardError(f"port {port} on {host} is in use; choose another with "
                                 "--port") from None
        raise DashboardError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    return sock


def check_database(dsn: str) -> None:
    """The database answers, metro_reader may be used and the dashboard's views exist."""
    with reader_connection(dsn) as conn:
        missing = queries.check_views(conn)
    if missing:
        raise DashboardError(f"the database lacks the dashboard's views ({', '.join(missing)}); "
                             "upgrade the schema with metro install")


def serve(host: str, port: int, kafka: str | None) -> int:
    import signal
    from types import FrameType

    import uvicorn

    class Server(uvicorn.Server):
        """Ctrl-C or SIGTERM stop the server and end the command normally (exit 0), as
        `metro bridge` does; uvicorn itself would re-raise the signal once stopped."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            self.should_exit = True

    dsn = database.conninfo()
    check_database(dsn)
    sock = bind(host, port)
    shown = f"[{host}]" if ":" in host else host
    print(f"metro dashboard: http://{shown}:{port}/ (Prometheus metrics at /metrics"
          + (f", Kafka {kafka}" if kafka else "") + "); Ctrl-C stops it", flush=True)
    config = uvicorn.Config(create_app(dsn, kafka), log_level="warning", access_log=False,
                            timeout_graceful_shutdown=1)
    try:
        Server(config).run(sockets=[sock])
    finally:
        sock.close()
    return 0

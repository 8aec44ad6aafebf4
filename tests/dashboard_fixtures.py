"""The dashboard's views on the test database, a login role that has only metro_reader,
and `metro dashboard` as a real process on a free port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from roles import login_role

PROJECT_ROOT = Path(__file__).resolve().parent.parent
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def as_user(dsn: str, user: str) -> str:
    return psycopg.conninfo.make_conninfo(dsn, user=user)


def metro_env(dsn: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.pop("METRO_KAFKA", None)
    env.pop("METRO_DATABASE_URL", None)
    if dsn is not None:
        env["METRO_DATABASE_URL"] = dsn
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_metro(*args: str, dsn: str | None = None,
              timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "metro.app.cli", *args], capture_output=True,
                          text=True, env=metro_env(dsn), timeout=timeout, cwd=PROJECT_ROOT,
                          stdin=subprocess.DEVNULL)


@pytest.fixture
def dashboard_db(db: str, conn: psycopg.Connection, stations: None) -> str:
    """The test database with stations and trains."""
    return db


@pytest.fixture
def reader_role(server_dsn: str) -> Iterator[str]:
    """A login role whose only privilege is membership of metro_reader."""
    with login_role(server_dsn, "dashboard_reader", "metro_reader") as name:
        yield name


class DashboardProcess:
    """`metro dashboard` on a free port of 127.0.0.1, as a user starts it."""

    def __init__(self, dsn: str, log: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with open(log, "ab") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "metro.app.cli", "dashboard", "--port", str(self.port),
                 *args],
                cwd=PROJECT_ROOT, env=metro_env(dsn), stdin=subprocess.DEVNULL, stdout=output,
                stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"metro dashboard exited with {self.process.returncode}: "
                                     f"{log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"metro dashboard did not listen: {log.read_text()}") from None
                time.sleep(0.1)

    def get(self, path: str) -> str:
        try:
            with urllib.request.urlopen(self.url + path, timeout=30) as response:
                return str(response.read().decode())
        except urllib.error.HTTPError as error:
            return str(error.read().decode())

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        return self.process.wait(20)


@pytest.fixture
def start_dashboard(tmp_path: Path) -> Iterator[Callable[..., DashboardProcess]]:
    started: list[DashboardProcess] = []

    def start(dsn: str, *args: str) -> DashboardProcess:
        dashboard = DashboardProcess(dsn, tmp_path / f"dashboard-{len(started)}.log", *args)
        started.append(dashboard)
        return dashboard

    yield start
    for dashboard in started:
        if dashboard.process.poll() is None:
            dashboard.process.kill()
            dashboard.process.wait(10)

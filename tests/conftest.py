"""Tests by what they need or show: unit/ (nothing), database/ (a real PostgreSQL),
kafka/ (a real Kafka broker as well; every test using it is marked `kafka`), e2e/ (whole
commands as a user runs them), security/ (what no role or client can do) and faults/
(crashes, outages, refused and malformed input).

Real PostgreSQL for every test: the schema is installed once per session into a
template database (through alembic, as `metro install` does), and each test gets
its own copy made with CREATE DATABASE ... TEMPLATE.

METRO_DATABASE_URL selects the server (its role needs CREATEDB); without it the
embedded server runs under .metro-test/ in the repository, one per pytest-xdist worker
(`make test` runs two, a test file at a time each).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from metro import config, schema
from metro.database import with_dbname
from metro.embedded import EmbeddedServer

# The session Kafka broker, the dashboard's server, and their fixtures.
pytest_plugins = ["kafka_fixtures", "dashboard_fixtures"]

_counter = itertools.count()

# The tests' clock is fixed (factories.T0, 2026-11-02), and run_maintenance() (the worker
# runs it) counts retention back from the server's clock: as the calendar moved on, it
# took the tests' rows away (from 2026-12-02 on, a month after T0). The template keeps
# every row for a century; the tests of retention ask for the defaults
# (default_retention).
RETENTION_PERIODS = ("event_retention", "history_retention", "dead_letter_retention",
                     "decision_retention")
KEPT_FOR = "36500 days"


@pytest.fixture(scope="session")
def server_dsn() -> Iterator[str]:
    """A DSN on the test server's maintenance database; an embedded server the session
    started is stopped when it ends."""
    external = config.external_database_url()
    if external is not None:
        yield with_dbname(external, "postgres")
        return
    # One server per pytest-xdist worker (gw0, gw1, ...), each under its own directory.
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    server = EmbeddedServer(Path(__file__).resolve().parent.parent / ".metro-test" / worker)
    was_running = server.running()
    server.start()
    yield server.conninfo("postgres")
    if not was_running:
        server.stop()


def _drop(admin: psycopg.Connection, name: str) -> None:
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def template_db(server_dsn: str) -> Iterator[str]:
    """Name of a database holding the installed schema, copied by every test."""
    name = f"metro_template_{os.getpid()}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        _drop(admin, name)
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    schema.upgrade(with_dbname(server_dsn, name))
    with psycopg.connect(with_dbname(server_dsn, name), autocommit=True) as conn:
        conn.execute("UPDATE metro.settings SET " + ", ".join(
            f"{period} = '{KEPT_FOR}'" for period in RETENTION_PERIODS))
    yield name
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        _drop(admin, name)


@pytest.fixture
def db(server_dsn: str, template_db: str) -> Iterator[str]:
    """DSN of a fresh database with the metro schema, dropped after the test."""
    name = f"metro_test_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        _drop(admin, name)
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(template_db)))
    dsn = with_dbname(server_dsn, name)
    # Database settings are not copied from a template.
    with psycopg.connect(dsn, autocommit=True) as conn:
        schema.set_search_path(conn)
    yield dsn
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        _drop(admin, name)


@pytest.fixture
def conn(db: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the test's database: every call is its own transaction."""
    with psycopg.connect(db, autocommit=True) as connection:
        yield connection


@pytest.fixture
def default_retention(conn: psycopg.Connection) -> None:
    """The schema's default retention periods (the template keeps every row)."""
    conn.execute("UPDATE metro.settings SET " + ", ".join(
        f"{period} = DEFAULT" for period in RETENTION_PERIODS))


@pytest.fixture
def stations(conn: psycopg.Connection) -> None:
    """The project's stations and trains, loaded with COPY."""
    for table, path in (("stations", "stations.csv"), ("trains", "trains.csv")):
        with conn.cursor().copy(
            sql.SQL("COPY {} FROM STDIN (FORMAT csv, HEADER true)").format(sql.Identifier(table))
        ) as copy:
            copy.write((config.DATA_DIR / path).read_bytes())
@pytest.fixture
def empty_db(server_dsn):
    """Factory of empty databases on the test server, dropped afterwards."""
    created = []

    def make(suffix):
        name = f"metro_empty_{os.getpid()}_{suffix}"
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        created.append(name)
        return with_dbname(server_dsn, name)

    yield make
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        for name in created:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses the session's Kafka broker: `pytest -m "not kafka"` runs
    the rest without Java; `make test` runs them all."""
    for item in items:
        if "kafka_broker" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kafka)

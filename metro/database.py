"""Which PostgreSQL metro talks to, and connections to it.

METRO_DATABASE_URL (or the PG* variables) selects any PostgreSQL 13+;
otherwise the embedded server under METRO_HOME is started on demand.
"""

from __future__ import annotations

import re
import sys

import psycopg

from metro import config
from metro.embedded import EmbeddedServer
from metro.errors import DatabaseUnavailable


def embedded_server() -> EmbeddedServer:
    return EmbeddedServer(config.metro_home())


def uses_embedded() -> bool:
    return config.external_database_url() is None


def conninfo(start: bool = True) -> str:
    """Connection string of the selected database, starting the embedded server if needed."""
    external = config.external_database_url()
    if external is not None:
        try:
            psycopg.conninfo.conninfo_to_dict(external)
        except psycopg.Error as error:
            raise DatabaseUnavailable(
                f"{config.external_database_source()} is not a PostgreSQL connection string "
                f"({_one_line(error)}); example: postgresql://user@host:5432/dbname") from None
        return external
    server = embedded_server()
    if start and not server.running():
        # Said once, on stderr: a command that starts a server should not do so silently.
        print(f"starting the embedded PostgreSQL (data {server.pgdata}; `metro db stop` "
              "stops it)", file=sys.stderr, flush=True)
    if start:
        server.start()
    return server.conninfo()


def connect(dsn: str | None = None, **kwargs: object) -> psycopg.Connection:
    """A connection to the selected database, with a one-line error when it cannot be reached."""
    target = conninfo() if dsn is None else dsn
    try:
        return psycopg.connect(target, **kwargs)  # type: ignore[arg-type]
    except psycopg.OperationalError as error:
        raise DatabaseUnavailable(f"cannot connect to PostgreSQL: {_one_line(error)}") from None


# Refusals of a connection that only the operator can end (libpq's and the server's
# words): a typo in METRO_DATABASE_URL, a role without a login.
_REFUSED_BY_SETTINGS = re.compile(
    r'(database|role) "[^"]*" does not exist|authentication failed|no pg_hba\.conf entry'
    r'|is not permitted to log in|no password supplied')


def service_connection(dsn: str, first: bool, **kwargs: object) -> psycopg.Connection:
    """A long-running service's connection. A refusal by the settings on its first
    connection stops the service (DatabaseUnavailable, one line): retrying would wait
    forever on a typo. Anything else, or later, is an outage the service retries
    (psycopg.OperationalError)."""
    try:
        return psycopg.connect(dsn, **kwargs)  # type: ignore[arg-type]
    except psycopg.OperationalError as error:
        if first and _REFUSED_BY_SETTINGS.search(str(error)):
            raise DatabaseUnavailable(f"cannot connect to PostgreSQL: {_one_line(error)}; "
                                      "check METRO_DATABASE_URL") from None
        raise


# What a long-running service waits out, retrying: the server unreachable or restarting,
# or read-only (a standby after a failover, until the URL leads to the new primary).
OUTAGES = (psycopg.OperationalError, psycopg.errors.ReadOnlySqlTransaction)


def first_line(error: BaseException) -> str:
    """The first line of an error's text (PostgreSQL adds DETAIL and CONTEXT lines)."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0].strip()


def outage_text(error: psycopg.Error) -> str:
    """One line for an outage, for the terminal and the service's last error."""
    first = first_line(error)
    if isinstance(error, psycopg.errors.ReadOnlySqlTransaction):
        return (f"PostgreSQL is read-only here ({first}): a standby? "
                "target_session_attrs=read-write in the URL leads to the primary")
    return f"PostgreSQL unavailable: {first}"


def _one_line(error: Exception) -> str:
    """libpq's messages span lines; users get one."""
    return " ".join(str(error).split())


def with_dbname(dsn: str, dbname: str) -> str:
    """The same server and credentials, another database (for tests and templates)."""
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    params["dbname"] = dbname
    return psycopg.conninfo.make_conninfo(**params)  # type: ignore[arg-type]

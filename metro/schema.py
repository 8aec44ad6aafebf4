"""Installing the metro schema.

The current schema is the tree of sql/ (tables, views, roles) and procedures/
(functions), by domain, edited in place; TREE is its install order. The
upgrade path is migrations/: frozen alembic revisions, each applying its own
frozen SQL file (migrations/versions/NNNN_name.sql) that never changes again.

`install` puts an empty database on the tree and stamps the head revision (a
fresh install never replays history); a database that has the schema is
brought to the head with `alembic upgrade head`. tests/test_migrations.py
checks that both give the same catalog.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import NoReturn

import psycopg
from alembic import command, op
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from psycopg import sql
from sqlalchemy import create_engine, pool
from sqlalchemy.exc import DBAPIError

from metro import config, database
from metro.errors import MetroError

SCHEMA = "metro"
SEARCH_PATH = "metro, public"

# The install order of the current tree: (directory, file). sql/ files create
# tables, views and grants; procedures/ files create functions and triggers.
# procedures/bridge.sql (register_stream) comes before the files that
# register their stream tables with it.
TREE: tuple[tuple[str, str], ...] = (
    ("sql", "schema.sql"),            # schema, shared types and domains, settings
    ("sql", "roles.sql"),             # metro_app, metro_reader, metro_bridge
    ("sql", "errors.sql"),            # error_codes
    ("procedures", "support.sql"),    # raise helpers, money text, the settings row
    ("sql", "network.sql"),           # stations, trains, train events, departures
    ("sql", "cards.sql"),             # cards, card_events
    ("sql", "history.sql"),           # per-second history
    ("sql", "bridge.sql"),            # streams registry, bridge cursors and state
    ("procedures", "bridge.sql"),     # register_stream, the bridge's functions
    ("sql", "streams.sql"),           # fraud, card_alert_export, trips
    ("sql", "risk.sql"),              # risk tags, rules, decisions, transaction_decisions
    ("sql", "views.sql"),             # dashboard views
    ("sql", "worker.sql"),            # metro_worker, the rollup's cursors, the worker lease
    ("procedures", "history.sql"),    # card_events triggers, run_rollup(), worker_lag()
    ("procedures", "maintenance.sql"),  # partitions and retention: run_maintenance()
    ("procedures", "worker.sql"),     # the worker lease functions
    ("procedures", "fraud.sql"),      # fraud rules, is_fraud
    ("procedures", "gates.sql"),      # validate_entry(ies), process_exit
    ("procedures", "risk.sql"),       # risk rule, evaluate_transaction(s)
    ("procedures", "recharge.sql"),   # recharge_card
    ("procedures", "trains.sql"),     # record_train_event
    ("procedures", "privileges.sql"), # no function executable by PUBLIC (last)
)


def tree_dirs() -> dict[str, Path]:
    return {"sql": config.SQL_DIR, "procedures": config.PROCEDURES_DIR}


def sql_tree() -> list[Path]:
    """The files of the current schema, in install order (TREE)."""
    dirs = tree_dirs()
    return [dirs[directory] / name for directory, name in TREE]


def apply_files(conn: psycopg.Connection, files: Iterable[Path]) -> None:
    """Run SQL files on conn, in order, inside the caller's transaction."""
    for path in files:
        # No parameters: psycopg sends the file as one simple query, so
        # several statements and $$-quoted bodies work as in psql.
        conn.execute(path.read_text())
        conn.execute("RESET search_path")


def apply_tree(conn: psycopg.Connection) -> None:
    """Create the current schema on conn (an empty database), in the caller's transaction."""
    apply_files(conn, sql_tree())


def run_revision_sql(path: Path) -> None:
    """An alembic revision's upgrade: its own frozen SQL file, in the revision's transaction."""
    conn = op.get_bind().connection.driver_connection
    assert isinstance(conn, psycopg.Connection)
    apply_files(conn, [path])


def refuse_downgrade(revision: str) -> NoReturn:
    """A frozen revision's downgrade: there is none; an older release is installed afresh."""
    raise NotImplementedError(f"{revision} has no downgrade: install an older release afresh")


def alembic_config(dsn: str) -> Config:
    alembic = Config()
    alembic.set_main_option("script_location", str(config.MIGRATIONS_DIR))
    alembic.attributes["dsn"] = dsn
    return alembic


def head_revision() -> str:
    """The newest revision in migrations/."""
    head = ScriptDirectory.from_config(alembic_config("")).get_current_head()
    assert head is not None
    return head


def upgrade(dsn: str, revision: str = "head") -> None:
    """Bring the schema of dsn to revision through the frozen revisions (from an empty
    database too: that replays every revision)."""
    command.upgrade(alembic_config(dsn), revision)


def set_search_path(conn: psycopg.Connection) -> None:
    """Let new sessions call the functions unqualified: SELECT * FROM validate_entry(42, 3)."""
    dbname = conn.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
    conn.execute(sql.SQL("ALTER DATABASE {} SET search_path = metro, public").format(
        sql.Identifier(dbname)))


def current_revision(conn: psycopg.Connection) -> str | None:
    row = conn.execute(
        "SELECT to_regclass('metro.alembic_version') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return None
    version = conn.execute("SELECT version_num FROM metro.alembic_version").fetchone()
    return version[0] if version else None


def install_tree(dsn: str) -> bool:
    """On a database without the metro schema: the current tree and the head revision's
    stamp, in one transaction. Returns False, changing nothing, when schema metro exists."""
    engine = create_engine("postgresql+psycopg://", poolclass=pool.NullPool,
                           creator=lambda: psycopg.connect(dsn))
    try:
        with engine.begin() as connection:
            conn = connection.connection.driver_connection
            assert isinstance(conn, psycopg.Connection)
            # Two installs at once: the second waits, then finds the schema.
            conn.execute("SELECT pg_advisory_xact_lock(1836348002, 3)")
            if conn.execute("SELECT to_regnamespace('metro') IS NOT NULL").fetchone() != (False,):
                return False
            apply_tree(conn)
            context = MigrationContext.configure(connection,
                                                 opts={"version_table_schema": SCHEMA})
            context.stamp(ScriptDirectory.from_config(alembic_config(dsn)), "head")
    finally:
        engine.dispose()
    return True


def require_installed(conn: psycopg.Connection, table: str, revision: str) -> None:
    """Stop with one clear line, not a missing-relation error, when the database lacks the
    metro table a command needs: no schema at all, or one older than the revision that
    added the table."""
    row = conn.execute("SELECT to_regnamespace(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL",
                       (SCHEMA, f"{SCHEMA}.{table}")).fetchone()
    if row == (True, True):
        return
    if row is None or not row[0]:
        raise MetroError("the database has no metro schema: run `metro install` first")
    raise MetroError(f"the metro schema here is older than revision {revision}, which added "
                     f"{SCHEMA}.{table}: run `metro install` to upgrade it")


def require_current(conn: psycopg.Connection) -> None:
    """Stop with one clear line unless the schema is at this metro's head revision: the
    services call its functions as they are there (against an older schema a bridge
    would set every inbound message aside as a dead letter)."""
    head = head_revision()
    try:
        row = conn.execute("SELECT metro.schema_revision()").fetchone()
    except (psycopg.errors.UndefinedFunction, psycopg.errors.InvalidSchemaName):
        # schema_revision() came with 0021; without it, say what else is missing.
        conn.rollback()
        require_installed(conn, "settings", "0001")
        raise MetroError(f"the metro schema here is older than revision {head}, which this "
                         "metro needs: run `metro install` to upgrade it") from None
    revision = row[0] if row else None
    if revision == head:
        return
    known = {script.revision for script in
             ScriptDirectory.from_config(alembic_config("")).walk_revisions()}
    if revision in known:
        raise MetroError(f"the metro schema here is at revision {revision}, older than "
                         f"{head}, which this metro needs: run `metro install` to upgrade it")
    raise MetroError(f"the metro schema here is at revision {revision}, which this metro "
                     f"(head {head}) does not know: a newer metro installed it; run that "
                     "one's services")


def _install_refusal(error: BaseException | None) -> BaseException:
    if isinstance(error, psycopg.errors.InsufficientPrivilege):
        primary = error.diag.message_primary or ""
        if primary.startswith(("permission denied to create role",
                               "permission denied to grant role",
                               "must have admin option on role")):
            # The database's owner may still lack the cluster-wide right over the roles
            # (PostgreSQL 15 and older word the missing ADMIN OPTION "must have ...").
            return MetroError(f"{primary}: installing creates the roles metro_app, "
                              "metro_reader, metro_bridge, metro_worker and metro_replay and "
                              "grants them to one another, which needs CREATEROLE and ADMIN "
                              "OPTION on them (the role that created them has it); run metro "
                              "install as that role or as a superuser")
        return MetroError(f"{primary}: installing needs CREATE on the "
                          "database (a new schema metro), upgrading the ownership of schema "
                          "metro; run metro install as the database's owner")
    return error if error is not None else MetroError("the install failed")


def install(dsn: str) -> str:
    """Create or upgrade the schema and set the search_path; idempotent. Returns the revision.

    An empty database gets the current tree, stamped at the head revision; a database
    with the schema is upgraded through the revisions it lacks."""
    # Connect first: an unreachable server is reported in one line, not by alembic.
    with database.connect(dsn, autocommit=True):
        pass
    try:
        if not install_tree(dsn):
            upgrade(dsn)
    except (DBAPIError, psycopg.Error) as error:
        # Alembic's errors come wrapped by SQLAlchemy: report PostgreSQL's own, in one line.
        raise _install_refusal(error.orig if isinstance(error, DBAPIError) else error) from None
    with database.connect(dsn, autocommit=True) as conn:
        set_search_path(conn)
        # Today's and the next days' partitions exist from the start, worker or not.
        conn.execute("SELECT count(*) FROM metro.run_maintenance()")
        revision = current_revision(conn)
    assert revision is not None
    return revision

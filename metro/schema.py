"""Installing the metro schema: alembic for the upgrade path, the SQL tree as the truth."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import psycopg
from alembic import command, op
from alembic.config import Config
from alembic.script import ScriptDirectory
from psycopg import sql

from metro import config, database

SCHEMA = "metro"
SEARCH_PATH = "metro, public"


def sql_tree() -> list[Path]:
    """sql/ then procedures/, each in name order: the canonical schema."""
    return sorted(config.SQL_DIR.glob("*.sql")) + sorted(config.PROCEDURES_DIR.glob("*.sql"))


def apply_files(conn: psycopg.Connection, files: Iterable[Path]) -> None:
    """Run SQL files on conn, in order, inside the caller's transaction."""
    for path in files:
        # No parameters: psycopg sends the file as one simple query, so
        # several statements and $$-quoted bodies work as in psql.
        conn.execute(path.read_text())
        conn.execute("RESET search_path")


def apply_revision_files(table_files: Sequence[str] = (),
                         procedure_files: Sequence[str] = ()) -> None:
    """An alembic revision's upgrade: its sql/ files, then its procedures/ files, in the
    revision's transaction."""
    conn = op.get_bind().connection.driver_connection
    assert isinstance(conn, psycopg.Connection)
    apply_files(conn, [config.SQL_DIR / name for name in table_files]
                + [config.PROCEDURES_DIR / name for name in procedure_files])


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
    """Bring the schema of dsn to revision (creating it on an empty database)."""
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


def install(dsn: str) -> str:
    """Create or upgrade the schema and set the search_path; idempotent. Returns the revision."""
    # Connect first: an unreachable server is reported in one line, not by alembic.
    with database.connect(dsn, autocommit=True):
        pass
    upgrade(dsn)
    with database.connect(dsn, autocommit=True) as conn:
        set_search_path(conn)
        revision = current_revision(conn)
    assert revision is not None
    return revision

"""Where metro keeps its state and which servers it talks to, from the environment."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SQL_DIR = PROJECT_ROOT / "sql"
PROCEDURES_DIR = PROJECT_ROOT / "procedures"
MIGRATIONS_DIR = PROJECT_ROOT / "migrations"
DATA_DIR = PROJECT_ROOT / "data"

# libpq reads these itself; any of them means "use that server, not the embedded one".
_PG_SELECTORS = ("PGHOST", "PGPORT", "PGDATABASE", "PGSERVICE")


def metro_home() -> Path:
    """Project data directory (embedded database, reports): METRO_HOME or ./.metro."""
    return Path(os.environ.get("METRO_HOME", ".metro")).expanduser().resolve()


def external_database_url() -> str | None:
    """Connection string of a user-selected PostgreSQL, or None for the embedded one.

    METRO_DATABASE_URL wins; otherwise the PG* variables select a server and
    the empty conninfo lets libpq read them.
    """
    url = os.environ.get("METRO_DATABASE_URL", "").strip()
    if url:
        return url
    if any(os.environ.get(name) for name in _PG_SELECTORS):
        return ""
    return None


def kafka_bootstrap(cli_value: str | None = None) -> str | None:
    """Kafka bootstrap servers from --kafka or METRO_KAFKA."""
    return cli_value or os.environ.get("METRO_KAFKA") or None

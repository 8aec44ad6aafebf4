"""Every environment variable metro reads, with its default, and where its files are.

Nothing else in metro reads os.environ (libpq reads the PG* variables itself).
"""

from __future__ import annotations

import os
from pathlib import Path

from metro.errors import MetroError

PACKAGE_DIR = Path(__file__).resolve().parent
# Package data: the schema, its upgrade path and the sample data travel inside the package.
SQL_DIR = PACKAGE_DIR / "sql"
PROCEDURES_DIR = PACKAGE_DIR / "procedures"
MIGRATIONS_DIR = PACKAGE_DIR / "migrations"
DATA_DIR = PACKAGE_DIR / "data"

# libpq reads these itself; any of them means "use that server, not the embedded one".
PG_SELECTORS = ("PGHOST", "PGPORT", "PGDATABASE", "PGSERVICE")

DEFAULT_KAFKA_PORT = 19092
DEFAULT_KAFKA_HEAP = "256m"


class ConfigError(MetroError):
    """An environment variable holds a value metro cannot use."""


def _get(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def metro_home() -> Path:
    """Project data directory (embedded database, broker, reports): METRO_HOME or ./.metro."""
    return Path(_get("METRO_HOME") or ".metro").expanduser().resolve()


def external_database_url() -> str | None:
    """Connection string of a user-selected PostgreSQL, or None for the embedded one.

    METRO_DATABASE_URL wins; otherwise the PG* variables select a server and
    the empty conninfo lets libpq read them.
    """
    url = _get("METRO_DATABASE_URL")
    if url:
        return url
    if any(_get(name) for name in PG_SELECTORS):
        return ""
    return None


def external_database_source() -> str:
    """Which variable selected the external database, for messages."""
    return "METRO_DATABASE_URL" if _get("METRO_DATABASE_URL") else "PG* variables"


def kafka_bootstrap(cli_value: str | None = None) -> str | None:
    """Kafka bootstrap servers from --kafka or METRO_KAFKA; None: not configured."""
    return cli_value or _get("METRO_KAFKA")


def kafka_port() -> int:
    """Port of the project's own broker: METRO_KAFKA_PORT or 19092."""
    value = _get("METRO_KAFKA_PORT") or str(DEFAULT_KAFKA_PORT)
    if not value.isdigit() or not 0 < int(value) < 65535:
        raise ConfigError(f"METRO_KAFKA_PORT must be a TCP port number, got {value!r}")
    return int(value)


def kafka_heap() -> str:
    """Java heap of the project's own broker: METRO_KAFKA_HEAP or 256m."""
    return _get("METRO_KAFKA_HEAP") or DEFAULT_KAFKA_HEAP


def kafka_cache() -> Path:
    """Where fetched broker jars are kept: METRO_KAFKA_CACHE or ~/.cache/metro."""
    configured = _get("METRO_KAFKA_CACHE")
    return (Path(configured) if configured else Path.home() / ".cache" / "metro").expanduser()


def java_home() -> Path | None:
    """JAVA_HOME, when set."""
    value = _get("JAVA_HOME")
    return Path(value) if value else None


def local_kafka_address_file() -> Path:
    """Where the project's own broker records the address it listens on while it runs."""
    return metro_home() / "kafka" / "bootstrap"


def local_kafka_bootstrap() -> str:
    """The project's own broker: the address it recorded when it started, else the
    address it would start on (METRO_KAFKA_PORT)."""
    try:
        recorded = local_kafka_address_file().read_text().strip()
    except OSError:
        recorded = ""
    return recorded or f"127.0.0.1:{kafka_port()}"


def kafka_servers(cli_value: str | None = None) -> str:
    """Kafka bootstrap servers: --kafka, METRO_KAFKA, else the project's own broker."""
    return kafka_bootstrap(cli_value) or local_kafka_bootstrap()


def kafka_config_file() -> Path | None:
    """The Kafka client properties file (TLS, SASL) named by METRO_KAFKA_CONFIG, or None.

    metro.kafka_settings reads it; a relative name is taken from the working directory.
    """
    value = _get("METRO_KAFKA_CONFIG")
    return Path(value).expanduser().resolve() if value else None


def bench_keep_databases() -> bool:
    """METRO_BENCH_KEEP=1: the benchmarks leave their scratch databases behind (to look
    into them) instead of dropping them when they finish."""
    return _get("METRO_BENCH_KEEP") == "1"


def bench_results_dir() -> Path | None:
    """Where the benchmarks write their JSON: METRO_BENCH_RESULTS, else None (their own
    results folder)."""
    value = _get("METRO_BENCH_RESULTS")
    return Path(value) if value else None

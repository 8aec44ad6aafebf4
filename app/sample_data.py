"""Sample data, loaded with the project's loader: the line's stations and trains (data/),
and cards from the producers' generator.

Loading is idempotent: stations and trains are upserted, and cards already in
metro.cards are kept; only the ones missing from the wanted count are generated.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import psycopg

from metro import config
from metro.errors import MetroError

from ..loader import cli as loader_cli
from ..producers import cards

REFERENCE_FILES = (config.DATA_DIR / "stations.csv", config.DATA_DIR / "trains.csv")


def report_dir() -> Path:
    """Where the loader's report files go: METRO_HOME/log."""
    return config.metro_home() / "log"


def load_csv(conn: psycopg.Connection, path: Path, *options: str) -> None:
    """`loader --header OPTIONS PATH` on conn; it prints its summary line. A file with
    invalid rows is an error: the sample data is the project's own."""
    args = loader_cli.build_parser().parse_args(
        ["--header", "--reportdir", str(report_dir()), *options, str(path)])
    if loader_cli.load_file(conn, path, args) != loader_cli.EXIT_OK:
        raise MetroError(f"{path.name} has invalid rows; see the loader's report in "
                         f"{report_dir()}")


def load_reference_data(conn: psycopg.Connection) -> None:
    """Upsert data/stations.csv and data/trains.csv."""
    for path in REFERENCE_FILES:
        load_csv(conn, path, "--upsert")


def ensure_cards(conn: psycopg.Connection, wanted: int) -> tuple[int, int]:
    """At least `wanted` cards in metro.cards: generate and load the missing ones, numbered
    after the highest card_id. Returns (cards kept, cards generated)."""
    row = conn.execute("SELECT count(*), coalesce(max(card_id), 0) FROM metro.cards").fetchone()
    assert row is not None
    present, highest = row
    missing = wanted - present
    if missing <= 0:
        return present, 0
    today = datetime.now(UTC).date()
    path = config.metro_home() / "cards.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as output:
        cards.write_csv(cards.generate(missing, today, first_id=highest + 1), output, today)
    load_csv(conn, path)
    return present, missing

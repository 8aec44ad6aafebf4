"""Small helpers that put rows in place and read outcomes back, for the function tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

T0 = datetime(2026, 11, 2, 8, 0, 0, tzinfo=UTC)


def at(seconds: float = 0, minutes: float = 0) -> datetime:
    """A point on the tests' fixed clock."""
    return T0 + timedelta(seconds=seconds, minutes=minutes)


def add_card(conn: psycopg.Connection, card_id: int, *, balance: int = 1000, card_type: int = 0,
             enabled: bool = True, expires: datetime | None = None, notify: int = 0,
             name: str = "Rider", phone: str | None = "555-0100",
             email: str | None = "rider@example.org") -> None:
    conn.execute(
        "INSERT INTO cards (card_id, enabled, card_type, balance, expires, name, phone, email,"
        " notify) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (card_id, enabled, card_type, balance, expires, name, phone, email, notify))


def call(conn: psycopg.Connection, function: str, *args: Any) -> tuple[Any, ...]:
    placeholders = ", ".join(["%s"] * len(args))
    row = conn.execute(f"SELECT * FROM {function}({placeholders})", args).fetchone()
    assert row is not None
    return tuple(row)


def balance(conn: psycopg.Connection, card_id: int) -> int:
    row = conn.execute("SELECT balance FROM cards WHERE card_id = %s", (card_id,)).fetchone()
    assert row is not None
    return int(row[0])


def events(conn: psycopg.Connection, card_id: int | None = None) -> list[tuple[Any, ...]]:
    """card_events as (card_id, ts, station_id, activity_code, amount, accept), in order."""
    query = "SELECT card_id, ts, station_id, activity_code, amount, accept FROM card_events"
    if card_id is None:
        return [tuple(r) for r in conn.execute(query + " ORDER BY event_id")]
    return [tuple(r) for r in conn.execute(query + " WHERE card_id = %s ORDER BY event_id",
                                           (card_id,))]


def stream(conn: psycopg.Connection, table: str) -> list[tuple[Any, ...]]:
    """A stream's contract columns (no position/txid), in position order."""
    columns = {
        "fraud": "trans_id, card_id, ts, station_id, activity_code, amount",
        "card_alert_export": "card_id, ts, station_name, name, phone, email, notify, alert_message",
        "trips": "card_id, entry_station, entry_ts, exit_station, exit_ts",
    }[table]
    return [tuple(r) for r in conn.execute(f"SELECT {columns} FROM {table} ORDER BY position")]


def counts(conn: psycopg.Connection) -> dict[str, int]:
    """Row counts of every table a call may write."""
    streams = [row[0] for row in conn.execute("SELECT stream FROM metro.streams ORDER BY stream")]
    tables = ("cards", "card_events", "train_events", "station_departures",
              "card_history_second", "station_second_slots", "risk_decisions", *streams)
    result = {}
    for table in tables:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        assert row is not None
        result[table] = int(row[0])
    return result


def catch_up(conn: psycopg.Connection) -> None:
    """Run the rollup until derived data has caught up with every committed source row."""
    while True:
        row = conn.execute("SELECT bool_or(full_round) FROM metro.run_rollup(10000)").fetchone()
        if not row or not row[0]:
            return


# Three fraud rows of cards 1-3, for the bridge's tests.
INSERT_FRAUD = ("INSERT INTO metro.fraud (trans_id, card_id, ts, station_id, activity_code, amount)"
                " SELECT n || '_1', n, '2026-11-02 08:00:00+00', 1, 1, 250"
                " FROM generate_series(1, 3) n")

"""A short scripted session: start the database, install, load sample data, show decisions.

Run by `metro demo`. It is safe to run again: reference data is upserted and
the sample cards are reset to their initial state.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg

from metro import database, schema, settings

SAMPLE_CARDS = [
    # card_id, enabled, card_type, balance, expires, name, phone, email, notify
    (42, True, 0, 5000, None, "Ada Quill", "555-0142", "ada@example.org", 1),
    (43, True, 1, 0, "2030-01-01T00:00:00Z", "Bo Lantern", "555-0143", None, 2),
    (44, False, 0, 5000, None, "Cy Foundry", None, None, 0),
    (45, True, 0, 100, None, "Di Harbor", "555-0145", None, 2),
    (46, True, 1, 0, "2020-06-30T00:00:00Z", "Ed Mill", None, None, 0),
]

# (minutes after the start, call, card, station): a rider's morning, and a cloned card.
SCRIPT = [
    (0, "validate_entry", 42, 4),
    (18, "process_exit", 42, 9),
    (19, "validate_entry", 43, 9),
    (20, "validate_entry", 44, 9),
    (21, "validate_entry", 45, 1),
    (22, "validate_entry", 46, 1),
    (23, "validate_entry", 777, 1),
    (24, "recharge_card", 45, 1),
    (25, "validate_entry", 45, 1),
    (30, "validate_entry", 42, 9),
    (31, "validate_entry", 42, 1),
    (32, "validate_entry", 42, 15),
    (33, "validate_entry", 42, 7),
    (34, "validate_entry", 42, 12),
]


def load_reference_data(conn: psycopg.Connection) -> None:
    """Upsert data/stations.csv and data/trains.csv."""
    for table, columns in (("stations", "station_id, name, fare, weight"),
                           ("trains", "train_id, name")):
        conn.execute(f"CREATE TEMP TABLE incoming (LIKE metro.{table}) ON COMMIT DROP")
        with conn.cursor().copy(f"COPY incoming ({columns}) FROM STDIN (FORMAT csv, HEADER true)") \
                as copy:
            copy.write((settings.DATA_DIR / f"{table}.csv").read_bytes())
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns.split(", ")[1:])
        conn.execute(f"INSERT INTO metro.{table} SELECT * FROM incoming "
                     f"ON CONFLICT ({columns.split(',')[0]}) DO UPDATE SET {updates}")
        conn.execute("DROP TABLE incoming")


def reset_sample_cards(conn: psycopg.Connection) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO metro.cards VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (card_id) DO UPDATE SET enabled = excluded.enabled, "
            "card_type = excluded.card_type, balance = excluded.balance, "
            "expires = excluded.expires, notify = excluded.notify",
            SAMPLE_CARDS,
        )


def script_start(conn: psycopg.Connection) -> datetime:
    """Now, or two hours after the sample cards' last event, so that an earlier run's
    swipes are outside the fraud window and every run prints the same decisions."""
    row = conn.execute("SELECT max(ts) FROM metro.card_events WHERE card_id = ANY(%s)",
                       ([card[0] for card in SAMPLE_CARDS],)).fetchone()
    now = datetime.now(UTC).replace(microsecond=0)
    last = row[0] if row else None
    return now if last is None else max(now, last.replace(microsecond=0) + timedelta(hours=2))


def run() -> int:
    dsn = database.conninfo()
    where = f"embedded, under {settings.metro_home()}" if database.uses_embedded() else "external"
    print(f"database: {where}")
    revision = schema.install(dsn)
    print(f"schema installed (revision {revision})")
    with psycopg.connect(dsn) as conn:
        load_reference_data(conn)
        reset_sample_cards(conn)
        conn.commit()
        stations = conn.execute("SELECT count(*) FROM metro.stations").fetchone()
        assert stations is not None
        print(f"loaded {stations[0]} stations and {len(SAMPLE_CARDS)} sample cards\n")
        start = script_start(conn)
        print(f"{'time':8}  {'call':16} {'card':>5} {'station':>7}  decision")
        for minutes, call, card, station in SCRIPT:
            ts = start + timedelta(minutes=minutes)
            if call == "recharge_card":
                row = conn.execute("SELECT * FROM metro.recharge_card(%s, 2000, %s, %s)",
                                   (card, station, ts)).fetchone()
            else:
                row = conn.execute(f"SELECT * FROM metro.{call}(%s, %s, %s)",
                                   (card, station, ts)).fetchone()
            conn.commit()
            assert row is not None
            verdict = "accepted" if row[0] else "refused "
            print(f"{ts:%H:%M:%S}  {call:16} {card:>5} {station:>7}  {verdict} {row[1]}")
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM metro.fraud),"
            " (SELECT count(*) FROM metro.card_alert_export),"
            " (SELECT count(*) FROM metro.trips)").fetchone()
        assert counts is not None
        print(f"\nstreams so far: fraud {counts[0]}, card_alert_export {counts[1]},"
              f" trips {counts[2]}")
    print("try it yourself: .venv/bin/metro psql -c 'SELECT * FROM validate_entry(42, 3)'")
    return 0

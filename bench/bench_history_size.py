"""validate_entry latency against the size of card_events: does a swipe cost the same
whatever the history behind it?

Adds past events (spread over the 500,000 cards and the last 30 days) in steps
up to each --sizes figure, and after each step measures validate_entry with
one client (latency) and with 8 (throughput). Target: p50 within 1.2x of the
empty table. The past events are inserted the way validate_entries writes
its own: with the history written in aggregate in the same transaction
(metro.history_written), since a row trigger per event would make loading
ten million events take most of an hour.

    python -m metro.bench.bench_history_size [--sizes 0,1000000,10000000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict

import psycopg

from . import pgbench
from .bench_validate_entry import CARDS, SWIPE, clients_list, prepare
from .common import print_table, scratch_database, summary_row, write_json

CHUNK = 1_000_000

ADD_EVENTS = """
    INSERT INTO metro.card_events (card_id, ts, station_id, activity_code, amount, accept)
    SELECT 1 + (n * 7919::bigint) %% {cards},
           now() - interval '30 days' * random() - interval '1 hour',
           1 + n %% 15, (ARRAY[1, 1, -1, 2])[1 + n %% 4], 0, (ARRAY[1, 1, 1, 0, -1])[1 + n %% 5]
    FROM generate_series(%(first)s, %(last)s) n"""
ADD_CARD_HISTORY = """
    INSERT INTO metro.card_history_second AS h (card_id, second_start, swipes)
    SELECT card_id, date_trunc('second', ts), count(*) FROM metro.card_events
    WHERE event_id > %(after)s GROUP BY 1, 2
    ON CONFLICT (card_id, second_start) DO UPDATE SET swipes = h.swipes + excluded.swipes"""
ADD_STATION_HISTORY = """
    INSERT INTO metro.station_second_slots AS s
        (station_id, second_start, slot, swipes, entries, accepted, rejected, fraud, revenue)
    SELECT station_id, date_trunc('second', ts), pg_backend_pid(), count(*),
           count(*) FILTER (WHERE activity_code = 1),
           count(*) FILTER (WHERE activity_code = 1 AND accept = 1),
           count(*) FILTER (WHERE activity_code = 1 AND accept = 0),
           count(*) FILTER (WHERE activity_code = 1 AND accept = -1), 0
    FROM metro.card_events WHERE event_id > %(after)s GROUP BY 1, 2
    ON CONFLICT (station_id, second_start, slot) DO UPDATE SET
        swipes = s.swipes + excluded.swipes, entries = s.entries + excluded.entries,
        accepted = s.accepted + excluded.accepted, rejected = s.rejected + excluded.rejected,
        fraud = s.fraud + excluded.fraud"""


def grow(conn: psycopg.Connection, target: int) -> None:
    """Add past events until card_events holds `target` rows."""
    row = conn.execute("SELECT count(*), coalesce(max(event_id), 0) FROM metro.card_events"
                       ).fetchone()
    assert row is not None
    have, last_id = row
    started = time.monotonic()
    while have < target:
        step = min(CHUNK, target - have)
        with conn.transaction():
            conn.execute("SET LOCAL metro.history_written = on")
            conn.execute(ADD_EVENTS.format(cards=CARDS), {"first": have + 1, "last": have + step})
            conn.execute(ADD_CARD_HISTORY, {"after": last_id})
            conn.execute(ADD_STATION_HISTORY, {"after": last_id})
        have += step
        last = conn.execute("SELECT max(event_id) FROM metro.card_events").fetchone()
        last_id = last[0] if last else last_id
        print(f"  card_events: {have:,} rows ({time.monotonic() - started:.0f} s)", flush=True)
    conn.execute("VACUUM ANALYZE metro.card_events, metro.card_history_second")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=clients_list, default=[0, 1_000_000, 10_000_000])
    parser.add_argument("--seconds", type=float, default=10, help="per pgbench run")
    args = parser.parse_args(argv)

    dsn = scratch_database("metro_bench_history_size")
    print(f"loading {CARDS:,} cards ...", flush=True)
    prepare(dsn)
    swipe = SWIPE.format(cards=CARDS)
    measured = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        # prepare() adds 10,010 events for its is_fraud cards; the steps count from there.
        for size in sorted(args.sizes):
            grow(conn, size)
            rows = conn.execute("SELECT count(*) FROM metro.card_events").fetchone()
            assert rows is not None
            pgbench.run(dsn, "warm-up", swipe, clients=8, seconds=3)
            one = pgbench.run(dsn, "validate_entry", swipe, clients=1, seconds=args.seconds)
            eight = pgbench.run(dsn, "validate_entry", swipe, clients=8, seconds=args.seconds)
            measured.append((rows[0], one, eight))

    base = measured[0][1].p50_ms
    table = [[f"{rows:,}", one.tps, one.p50_ms, one.p99_ms, f"{one.p50_ms / base:.2f}x",
              eight.tps, eight.p99_ms] for rows, one, eight in measured]
    print_table("validate_entry against the size of card_events (target: p50 within 1.2x)",
                ["card_events rows", "1 client swipes/s", "p50 ms", "p99 ms", "p50 vs smallest",
                 "8 clients swipes/s", "8 clients p99 ms"], table)
    write_json("history_size", {
        "cards": CARDS,
        "steps": [{"card_events_rows": rows, "one_client": asdict(one),
                   "eight_clients": asdict(eight)} for rows, one, eight in measured],
        "target_p50_ratio": 1.2,
        "summary": [summary_row("validate_entry vs history size",
                                f"{rows:,} events, 1 client", one.tps, "swipes/s", one.p50_ms,
                                one.p95_ms, one.p99_ms, baseline_ratio=one.p50_ms / base,
                                baseline=f"p50 / p50 at {measured[0][0]:,} events")
                    for rows, one, _ in measured],
    })


if __name__ == "__main__":
    main()

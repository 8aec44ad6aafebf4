"""validate_entry throughput and latency: 500,000 cards, durable commits, 8 clients.

Runs in one go, against one scratch database:
- baselines: a bare round trip (SELECT 1) and the cheapest durable transaction
  (one that only assigns a transaction id, so its commit is flushed to WAL);
- validate_entry at full speed (closed loop) and at an offered rate (open loop);
- is_fraud on a card with 10 events and on one with 10,000: the rules read a
  bounded index range, so both should cost the same.

    python -m bench.bench_validate_entry [--seconds 15] [--clients 8] [--rate 5000]
"""

from __future__ import annotations

import argparse
from dataclasses import asdict

import psycopg

from bench import pgbench
from bench.common import print_table, scratch_database, write_json

CARDS = 500_000
SWIPE = """\\set card random(1, {cards})
\\set station random(1, 15)
SELECT * FROM metro.validate_entry(:card, :station);
"""
FRAUD_CHECK = "SELECT metro.is_fraud({card}, 1);\n"
QUIET_CARD, BUSY_CARD = 900_001, 900_002


def prepare(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        # Every 20th card is unlimited; balances are large enough never to run out.
        conn.execute("""
            INSERT INTO metro.cards (card_id, enabled, card_type, balance, expires, name, phone,
                                     email, notify)
            SELECT n, true, (n %% 20 = 0)::int, 100000000,
                   CASE WHEN n %% 20 = 0 THEN now() + interval '1 year' END,
                   'Rider ' || n, '555-' || lpad((n %% 10000)::text, 4, '0'),
                   'rider' || n || '@example.org', n %% 3
            FROM generate_series(1, %s) n""", (CARDS,))
        # Two cards whose past differs a thousandfold, spread over the last ten days.
        for card, events in ((QUIET_CARD, 10), (BUSY_CARD, 10_000)):
            conn.execute("""
                INSERT INTO metro.card_events (card_id, ts, station_id, activity_code, amount,
                                               accept)
                SELECT %(card)s, now() - (n * interval '10 days' / %(events)s), 1 + n %% 15, 1,
                       250, 1
                FROM generate_series(1, %(events)s) n""", {"card": card, "events": events})
        conn.execute("VACUUM ANALYZE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rate", type=int, default=5000, help="offered swipes/s, open loop")
    args = parser.parse_args()

    dsn = scratch_database("metro_bench_validate_entry")
    print(f"loading {CARDS:,} cards ...", flush=True)
    prepare(dsn)
    swipe = SWIPE.format(cards=CARDS)
    pgbench.run(dsn, "warm-up", swipe, clients=args.clients, seconds=5)

    runs = [
        pgbench.run(dsn, "SELECT 1 (round trip)", "SELECT 1;\n", clients=args.clients,
                    seconds=args.seconds),
        pgbench.run(dsn, "empty durable commit", "SELECT pg_current_xact_id();\n",
                    clients=args.clients, seconds=args.seconds),
        pgbench.run(dsn, "validate_entry", swipe, clients=args.clients, seconds=args.seconds),
        pgbench.run(dsn, "validate_entry", swipe, clients=args.clients, seconds=args.seconds,
                    rate=args.rate),
        pgbench.run(dsn, "is_fraud, card with 10 events", FRAUD_CHECK.format(card=QUIET_CARD),
                    clients=1, seconds=args.seconds / 3),
        pgbench.run(dsn, "is_fraud, card with 10,000 events", FRAUD_CHECK.format(card=BUSY_CARD),
                    clients=1, seconds=args.seconds / 3),
    ]
    print_table(f"validate_entry, {CARDS:,} cards, durable commits", pgbench.COLUMNS,
                [r.row() for r in runs])
    durable, closed = runs[1], runs[2]
    print(f"validate_entry reaches {closed.tps / durable.tps:.0%} of the empty durable commit rate")
    write_json("validate_entry", {
        "cards": CARDS,
        "runs": [asdict(r) for r in runs],
        "ratio_to_empty_durable_commit": closed.tps / durable.tps,
        "targets": {"closed_loop_swipes_per_s": 8000, "p99_ms_at_5000_per_s": 6.0},
    })


if __name__ == "__main__":
    main()

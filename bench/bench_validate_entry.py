"""validate_entry, the usual way, and validate_entries: 500,000 cards, durable commits.

Runs in one go, against one scratch database, with the wheel's pgbench as the
load (a C client, so the database is what is measured):
- baselines: a bare round trip (SELECT 1) and the smallest durable write
  (one single-row INSERT, its commit flushed to WAL);
- validate_entry at full speed (closed loop) at each --clients count, and at
  each --rates offered rate (open loop: latency counted from each scheduled start);
- the same decision done the usual way: the client runs the rules with
  separate queries (station, card, history, update, insert) in one
  transaction, at the same client count; the ratio compares the two;
- validate_entries, batches of --batch swipes, at --bulk-clients;
- is_fraud on a card with 10 events and on one with 10,000.

    python -m metro.bench.bench_validate_entry [--seconds 15] [--clients 1,8,32] [--rates 3000,5000]
"""

from __future__ import annotations

import argparse
from dataclasses import asdict

import psycopg

from . import pgbench
from .common import print_table, scratch_database, summary_row, write_json

CARDS = 500_000
SWIPE = """\\set card random(1, {cards})
\\set station random(1, 15)
SELECT * FROM metro.validate_entry(:card, :station);
"""
# The same rules as validate_entry, decided by the client: one round trip per
# query, the thresholds from the application's configuration. Every card of
# the workload exists, so the card query always returns a row.
USUAL_WAY = """\\set card random(1, {cards})
\\set station random(1, 15)
BEGIN;
SELECT fare, name AS station_name FROM metro.stations WHERE station_id = :station \\gset
SELECT enabled::int AS enabled, card_type, balance, (expires > now())::int AS valid, notify,
       coalesce(name, '') AS name
FROM metro.cards WHERE card_id = :card FOR NO KEY UPDATE \\gset
SELECT EXISTS (SELECT 1 FROM metro.card_history_second
               WHERE card_id = :card AND second_start = date_trunc('second', now()))::int
       AS same_second \\gset
SELECT count(*) AS entries, count(DISTINCT station_id) AS stations
FROM (SELECT station_id FROM metro.card_events
      WHERE card_id = :card AND activity_code = 1
        AND ts >= now() - interval '1 hour' AND ts < now()
      ORDER BY ts DESC LIMIT 10) recent \\gset
\\if :enabled = 0
INSERT INTO metro.card_events (card_id, ts, station_id, activity_code, amount, accept)
VALUES (:card, now(), :station, 1, 0, 0);
\\elif :same_second = 1 or :entries >= 10 or :stations >= 5
INSERT INTO metro.card_events (card_id, ts, station_id, activity_code, amount, accept)
VALUES (:card, now(), :station, 1, 0, -1);
INSERT INTO metro.fraud (trans_id, card_id, ts, station_id, activity_code, amount)
VALUES (:card || '_' || (extract(epoch FROM now()) * 1000000)::bigint, :card, now(), :station,
        1, :fare);
\\elif :card_type = 1
INSERT INTO metro.card_events (card_id, ts, station_id, activity_code, amount, accept)
VALUES (:card, now(), :station, 1, 0, :valid);
\\elif :balance > :fare
UPDATE metro.cards SET balance = balance - :fare WHERE card_id = :card;
INSERT INTO metro.card_events (card_id, ts, station_id, activity_code, amount, accept)
VALUES (:card, now(), :station, 1, :fare, 1);
\\else
INSERT INTO metro.card_events (card_id, ts, station_id, activity_code, amount, accept)
VALUES (:card, now(), :station, 1, 0, 0);
\\endif
COMMIT;
"""
BULK = """SELECT count(*) FROM metro.validate_entries(
    ARRAY(SELECT 1 + (random() * {last})::bigint FROM generate_series(1, {batch})),
    ARRAY(SELECT 1 + (random() * 14)::integer FROM generate_series(1, {batch})));
"""
DURABLE_WRITE = "INSERT INTO bench_commit VALUES (1);\n"
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
        conn.execute("CREATE TABLE bench_commit (n integer)")
        conn.execute("VACUUM ANALYZE")


def clients_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15, help="per pgbench run")
    parser.add_argument("--clients", type=clients_list, default=[1, 8, 32])
    parser.add_argument("--rates", type=clients_list, default=[3000, 5000],
                        help="offered swipes/s for the open-loop runs")
    parser.add_argument("--batch", type=int, default=250, help="swipes per validate_entries")
    parser.add_argument("--bulk-clients", type=int, default=3)
    args = parser.parse_args(argv)

    dsn = scratch_database("metro_bench_validate_entry")
    print(f"loading {CARDS:,} cards ...", flush=True)
    prepare(dsn)
    swipe = SWIPE.format(cards=CARDS)
    usual = USUAL_WAY.format(cards=CARDS)
    bulk = BULK.format(last=CARDS - 1, batch=args.batch)
    pgbench.run(dsn, "warm-up", swipe, clients=8, seconds=5)
    seconds = args.seconds
    main_clients = 8 if 8 in args.clients else args.clients[0]

    runs = [pgbench.run(dsn, "SELECT 1 (round trip)", "SELECT 1;\n", clients=main_clients,
                        seconds=seconds),
            pgbench.run(dsn, "smallest durable write", DURABLE_WRITE, clients=main_clients,
                        seconds=seconds)]
    single = {}
    for clients in args.clients:
        single[clients] = pgbench.run(dsn, "validate_entry", swipe, clients=clients,
                                      seconds=seconds)
        runs.append(single[clients])
    open_loops = [pgbench.run(dsn, "validate_entry", swipe, clients=main_clients,
                              seconds=seconds, rate=rate) for rate in args.rates]
    usual_run = pgbench.run(dsn, "the usual way (client-side rules)", usual, clients=main_clients,
                            seconds=seconds)
    bulk_run = pgbench.run(dsn, f"validate_entries, {args.batch} per call", bulk,
                           clients=args.bulk_clients, seconds=seconds)
    quiet = pgbench.run(dsn, "is_fraud, card with 10 events", FRAUD_CHECK.format(card=QUIET_CARD),
                        clients=1, seconds=seconds / 3)
    busy = pgbench.run(dsn, "is_fraud, card with 10,000 events",
                       FRAUD_CHECK.format(card=BUSY_CARD), clients=1, seconds=seconds / 3)
    runs += [*open_loops, usual_run, bulk_run, quiet, busy]

    rows = [r.row() for r in runs]
    # pgbench counts calls; a validate_entries call decides --batch swipes.
    rows[runs.index(bulk_run)][3] = f"{bulk_run.tps * args.batch:,.0f} ({bulk_run.tps:,.0f} calls)"
    print_table(f"validate_entry, {CARDS:,} cards, durable commits", pgbench.COLUMNS, rows)
    ratio = single[main_clients].tps / usual_run.tps
    print(f"validate_entry at {main_clients} clients: {ratio:.2f}x the usual way")

    summary = [summary_row(f"validate_entry, {c} client{'s' if c > 1 else ''}",
                           f"{CARDS:,} cards, closed loop", single[c].tps, "swipes/s",
                           single[c].p50_ms, single[c].p95_ms, single[c].p99_ms)
               for c in args.clients]
    summary += [summary_row("validate_entry, open loop",
                            f"{run.offered_rate:,}/s offered, {main_clients} clients", run.tps,
                            "swipes/s", run.p50_ms, run.p95_ms, run.p99_ms)
                for run in open_loops]
    summary.append(summary_row("usual way: client-side rules", f"{main_clients} clients",
                               usual_run.tps, "swipes/s", usual_run.p50_ms, usual_run.p95_ms,
                               usual_run.p99_ms, baseline_ratio=ratio,
                               baseline=f"validate_entry at {main_clients} clients / this"))
    summary.append(summary_row("validate_entries (bulk)",
                               f"{args.batch} per call, {args.bulk_clients} clients",
                               bulk_run.tps * args.batch, "swipes/s", bulk_run.p50_ms,
                               bulk_run.p95_ms, bulk_run.p99_ms))
    summary.append(summary_row("is_fraud, 10,000-event card", "1 client", busy.tps, "calls/s",
                               busy.p50_ms, busy.p95_ms, busy.p99_ms,
                               baseline_ratio=busy.tps / quiet.tps,
                               baseline="calls/s / calls/s for a 10-event card"))
    write_json("validate_entry", {
        "cards": CARDS,
        "batch": args.batch,
        "runs": [asdict(r) for r in runs],
        "ratio_to_usual_way": ratio,
        "targets": {"closed_loop_swipes_per_s_at_8": 8000, "p99_ms_at_5000_per_s": 6.0,
                    "bulk_swipes_per_s": 30000},
        "summary": summary,
    })


if __name__ == "__main__":
    main()

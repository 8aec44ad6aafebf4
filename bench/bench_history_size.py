"""Does a swipe cost the same whatever the history behind it? Two questions, measured apart.

1. The size of card_events. Adds past events (spread over the 500,000 cards and
   the 30 days before the one-hour window, into the daily partitions a database
   keeps at the default retention) in steps up to each --sizes figure, and
   after each step (and a VACUUM ANALYZE) measures validate_entry with one client
   (latency) and with 8 (throughput), 3 rounds alternating the two (--repeats), each
   round after a CHECKPOINT, --seconds 10 per run; each run's
   background work (autovacuum, analyze, checkpoints) is listed beside the step.
   Target: the median p50 within 1.2x of the first step's.
2. A card's history inside the one-hour window, the part the rules read. Four kinds
   of card, --hot-cards of each kind (1,000), none of them charged or refused by
   anything but the rules:
   - cold: no event at all;
   - old: --hot-events events (1,000) all older than the window;
   - entries: --hot-events entries inside the window (the rules stop after
     fraud_entry_limit of them, and the card is refused as fraud);
   - exits and purchases: 2 entries and --hot-events - 2 exits and purchases
     inside the window (not fraud: the entry scan filters the others out).
   For one card of each kind, EXPLAIN (ANALYZE, BUFFERS) of the rules
   (metro.fraud_rule) gives the card_events index entries read and the buffers
   touched, and of a whole validate_entry (rolled back) its buffers; then is_fraud
   at 1 client on random cards of each kind, 3 rounds alternating the kinds, gives
   calls/s and p50 (median of the rounds, with their range). The in-window
   events are written just before they are measured, within the last 50 minutes.

The past events are inserted in bulk and their history is rolled up by
metro.run_rollup() in large rounds, as the worker would.

Checks (a failed one exits non-zero): card_events holds exactly the rows added;
is_fraud is false for the cold, old and exits-and-purchases cards and true for the
entries cards; the rules read no more than fraud_entry_limit index entries of the
entries card (one more per extra partition the window spans, e.g. after midnight UTC).

    python -m metro.bench.bench_history_size [--sizes 0,1000000,10000000] [--seconds 10]
                                       [--repeats 3] [--hot-cards 1000] [--hot-events 1000]
                                       [--smoke]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from typing import Any

import psycopg

from . import pgbench
from .bench_validate_entry import CARDS, SWIPE, number_list, prepare
from .common import (
    arguments,
    check,
    median,
    met,
    print_table,
    scratch_database,
    spread,
    spread_text,
    summary_row,
    write_json,
)

CHUNK = 1_000_000
TARGET_P50_RATIO = 1.2

ADD_EVENTS = """
    INSERT INTO metro.card_events (card_id, ts, station_id, activity_code, amount, accept)
    SELECT 1 + (n * 7919::bigint) %% {cards},
           now() - interval '30 days' * random() - interval '1 hour',
           1 + n %% 15, (ARRAY[1, 1, -1, 2])[1 + n %% 4], 0, (ARRAY[1, 1, 1, 0, -1])[1 + n %% 5]
    FROM generate_series(%(first)s::bigint, %(last)s::bigint) n"""
# The kinds of card of part 2: first card id, and the activity of the card's i-th event
# (i from 0) and how long before now() it happened, as SQL over i and the event count.
KINDS: dict[str, tuple[int, str | None, str]] = {
    "cold": (2_000_001, None, ""),
    "old": (3_000_001, "(ARRAY[1, -1, 2])[1 + i % 3]",
            "interval '1 hour 1 minute' + i * interval '10 days' / {events}"),
    "entries": (4_000_001, "1", "interval '1 minute' + i * interval '49 minutes' / {events}"),
    "exits and purchases": (5_000_001, "CASE WHEN i < 2 THEN 1 ELSE (ARRAY[-1, 2])[1 + i % 2] END",
                            "interval '1 minute' + i * interval '49 minutes' / {events}"),
}
EXPECTED_FRAUD = {"cold": False, "old": False, "entries": True, "exits and purchases": False}
FRAUD_CHECK = """\\set card random({first}, {last})
SELECT metro.is_fraud(:card, 1);
"""


def count_events(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM metro.card_events").fetchone()
    assert row is not None
    return int(row[0])


def add_events(conn: psycopg.Connection, insert: str, params: dict[str, Any]) -> int:
    """Insert events, then roll their history up; returns how many."""
    with conn.transaction():
        added = conn.execute(insert, params).rowcount
    while True:
        row = conn.execute("SELECT bool_or(full_round) FROM metro.run_rollup(1000000)"
                           ).fetchone()
        if not row or not row[0]:
            return added


def grow(conn: psycopg.Connection, target: int, cards: int) -> None:
    """Add past events until card_events holds `target` rows."""
    have = count_events(conn)
    started = time.monotonic()
    while have < target:
        step = min(CHUNK, target - have)
        added = add_events(conn, ADD_EVENTS.format(cards=cards),
                           {"first": have + 1, "last": have + step})
        check(added == step, f"{added:,} past events added, {step:,} asked")
        have += step
        print(f"  card_events: {have:,} rows ({time.monotonic() - started:.0f} s)", flush=True)
    check(count_events(conn) == have, "card_events does not hold the rows added")
    conn.execute("VACUUM ANALYZE metro.card_events, metro.card_history_second")


def add_kinds(conn: psycopg.Connection, hot_cards: int, events: int) -> None:
    """The cards of part 2 (pay-per-ride, money enough) and their events."""
    before = count_events(conn)
    for first, activity, ago in KINDS.values():
        conn.execute("INSERT INTO metro.cards (card_id, enabled, card_type, balance, notify)"
                     " SELECT n, true, 0, 100000000, 0 FROM generate_series(%s, %s) n",
                     (first, first + hot_cards - 1))
        if activity is None:
            continue
        add_events(conn, f"""
            INSERT INTO metro.card_events (card_id, ts, station_id, activity_code, amount,
                                           accept)
            SELECT c, now() - ({ago.format(events=events)}), 1 + (c + i) % 15,
                   {activity}, 0, 1
            FROM generate_series(%(first)s::bigint, %(last)s::bigint) c,
                 generate_series(0, %(events)s::integer - 1) i
            """.replace("%", "%%").replace("%%(", "%("),
                   {"first": first, "last": first + hot_cards - 1, "events": events})
    added = count_events(conn) - before
    check(added == 3 * hot_cards * events,
          f"{added:,} in-window and old events added, {3 * hot_cards * events:,} asked")
    conn.execute("VACUUM ANALYZE metro.card_events, metro.card_history_second, metro.cards")


def _scans(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan] if str(plan.get("Relation Name", "")).startswith("card_events") else []
    for child in plan.get("Plans", []):
        found += _scans(child)
    return found


def explain_rules(conn: psycopg.Connection, card: int) -> dict[str, Any]:
    """Index entries of card_events the rules read for card, buffers and time."""
    row = conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)"
                       " SELECT f.* FROM metro.settings t CROSS JOIN LATERAL metro.fraud_rule("
                       "%s, now(), t.fraud_window, t.fraud_entry_limit, t.fraud_station_limit) f",
                       (card,)).fetchone()
    assert row is not None
    top = row[0][0]
    plan = top["Plan"]
    scans = _scans(plan)
    read = sum((s["Actual Rows"] + s.get("Rows Removed by Filter", 0)) * s["Actual Loops"]
               for s in scans)
    return {"index_entries_read": int(read), "partitions_read": len(scans),
            "entries_kept": int(sum(s["Actual Rows"] * s["Actual Loops"] for s in scans)),
            "shared_buffers": plan["Shared Hit Blocks"] + plan["Shared Read Blocks"],
            "ms": top["Execution Time"]}


def explain_swipe(conn: psycopg.Connection, card: int) -> int:
    """Buffers touched by a whole validate_entry of card (rolled back), caches warm."""
    with conn.transaction(force_rollback=True):
        conn.execute("SELECT * FROM metro.validate_entry(1, 1)")   # plans cached
        row = conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)"
                           " SELECT * FROM metro.validate_entry(%s, 2)", (card,)).fetchone()
    assert row is not None
    plan = row[0][0]["Plan"]
    return int(plan["Shared Hit Blocks"] + plan["Shared Read Blocks"])


def in_window(dsn: str, args: argparse.Namespace) -> dict[str, Any]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        print(f"in-window history: {args.hot_cards:,} cards of each kind, {args.hot_events:,}"
              " events each ...", flush=True)
        add_kinds(conn, args.hot_cards, args.hot_events)
        limit = conn.execute("SELECT fraud_entry_limit FROM metro.settings").fetchone()
        assert limit is not None
        plans: dict[str, Any] = {}
        for kind, (first, _, _) in KINDS.items():
            fraud = conn.execute("SELECT metro.is_fraud(%s, 1)", (first,)).fetchone()
            check(fraud == (EXPECTED_FRAUD[kind],), f"is_fraud of a {kind} card: {fraud}")
            explained = [explain_rules(conn, first) for _ in range(3)]
            plans[kind] = {**explained[-1], "ms": spread([e["ms"] for e in explained]),
                           "validate_entry_buffers": explain_swipe(conn, first)}
        # The window may span two days' partitions: the merge of their ordered reads
        # takes one entry ahead from each partition but the last.
        allowed = limit[0] + plans["entries"]["partitions_read"] - 1
        check(plans["entries"]["index_entries_read"] <= allowed,
              f"the rules read {plans['entries']['index_entries_read']} index entries of a"
              f" card with {args.hot_events} entries in the window (limit {limit[0]},"
              f" {plans['entries']['partitions_read']} partitions)")
    runs: dict[str, list[pgbench.Run]] = {kind: [] for kind in KINDS}
    for _ in range(args.repeats):
        for kind, (first, _, _) in KINDS.items():
            script = FRAUD_CHECK.format(first=first, last=first + args.hot_cards - 1)
            runs[kind].append(pgbench.run(dsn, f"is_fraud, {kind} cards", script, clients=1,
                                          seconds=args.seconds,
                                          rows=("SELECT count(*) FROM metro.card_events", 0)))
    return {"plans": plans, "runs": runs, "fraud_entry_limit": limit[0]}


def main(argv: list[str] | None = None) -> None:
    parser = arguments(__doc__, seconds=10, cards=CARDS)
    parser.add_argument("--sizes", type=number_list, default=[0, 1_000_000, 10_000_000])
    parser.add_argument("--hot-cards", type=int, default=1_000)
    parser.add_argument("--hot-events", type=int, default=1_000)
    args = parser.parse_args(argv)
    if args.smoke:
        args.sizes, args.seconds, args.repeats = [0, 5_000], 1, 1
        args.hot_cards, args.hot_events, args.cards = 5, 200, 2_000
        pgbench.smoke_size()

    dsn = scratch_database("metro_bench_history_size", smoke=args.smoke)
    print(f"loading {args.cards:,} cards ...", flush=True)
    prepare(dsn, args.cards)
    swipe = SWIPE.format(cards=args.cards)
    events = ("SELECT count(*) FROM metro.card_events", 1)
    measured: list[tuple[int, list[pgbench.Run], list[pgbench.Run]]] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for size in sorted(args.sizes):
            grow(conn, size, args.cards)
            rows = count_events(conn)
            if not args.smoke:
                pgbench.run(dsn, "warm-up", swipe, clients=8, seconds=3)
            one, eight = [], []
            for _ in range(args.repeats):
                # No round pays for the writes before it: without this, the checkpoints
                # a fill and its VACUUM set off ran through the swipes measured next
                # (seen: one of 178 s across the 10,000,000 step, its p50 2.01x the first's).
                conn.execute("CHECKPOINT")
                one.append(pgbench.run(dsn, "validate_entry", swipe, clients=1,
                                       seconds=args.seconds, rows=events))
                eight.append(pgbench.run(dsn, "validate_entry", swipe, clients=8,
                                         seconds=args.seconds, rows=events))
            measured.append((rows, one, eight))
    window = in_window(dsn, args)

    base = pgbench.median_of(measured[0][1], "p50_ms")
    table = [[f"{rows:,}", spread_text([r.tps for r in one]), pgbench.median_of(one, "p50_ms"),
              pgbench.median_of(one, "p99_ms"),
              f"{pgbench.median_of(one, 'p50_ms') / base:.2f}x",
              spread_text([r.tps for r in eight]), pgbench.median_of(eight, "p99_ms"),
              "; ".join(r.background_text() for r in one + eight)]
             for rows, one, eight in measured]
    print_table(f"validate_entry against the size of card_events ({args.cards:,} cards, median"
                f" of {args.repeats} runs of {max(1, int(args.seconds))} s; target: p50 within"
                f" {TARGET_P50_RATIO}x)",
                ["card_events rows", "1 client swipes/s (range)", "p50 ms", "p99 ms",
                 "p50 vs smallest", "8 clients swipes/s (range)", "8 clients p99 ms",
                 "background work, run by run (1 client, then 8)"], table)

    plans, runs = window["plans"], window["runs"]
    cold_p50 = pgbench.median_of(runs["cold"], "p50_ms")
    cold_tps = pgbench.median_of(runs["cold"], "tps")
    print_table(f"the rules against the history inside the window ({args.hot_cards:,} cards"
                f" of each kind, {args.hot_events:,} events each; is_fraud at 1 client, median"
                f" of {args.repeats} runs)",
                ["card", "index entries read", "buffers (rules)", "buffers (validate_entry)",
                 "rules ms", "is_fraud calls/s (range)", "p50 ms", "p50 vs cold"],
                [[kind, plans[kind]["index_entries_read"], plans[kind]["shared_buffers"],
                  plans[kind]["validate_entry_buffers"], plans[kind]["ms"]["median"],
                  spread_text([r.tps for r in runs[kind]]),
                  pgbench.median_of(runs[kind], "p50_ms"),
                  f"{pgbench.median_of(runs[kind], 'p50_ms') / cold_p50:.2f}x"]
                 for kind in KINDS])
    summary = []
    for rows, one, _ in measured:
        ratio = pgbench.median_of(one, "p50_ms") / base
        summary.append(summary_row(
            "validate_entry vs history size", f"{rows:,} events, 1 client",
            pgbench.median_of(one, "tps"), "swipes/s", pgbench.median_of(one, "p50_ms"),
            pgbench.median_of(one, "p95_ms"), pgbench.median_of(one, "p99_ms"),
            baseline_ratio=ratio, baseline=f"p50 / p50 at {measured[0][0]:,} events",
            setup={"cards": args.cards, "card_events_rows": rows, "clients": 1,
                   "seconds": max(1, int(args.seconds)), "runs": args.repeats},
            runs=[r.tps for r in one], target=f"p50 <= {TARGET_P50_RATIO}x",
            met=met(ratio, TARGET_P50_RATIO, higher_is_better=False)))
    for kind in KINDS:
        summary.append(summary_row(
            f"is_fraud, {kind} card", f"{plans[kind]['index_entries_read']:,} index entries"
            f" read, {plans[kind]['shared_buffers']} buffers",
            pgbench.median_of(runs[kind], "tps"), "calls/s",
            pgbench.median_of(runs[kind], "p50_ms"), pgbench.median_of(runs[kind], "p95_ms"),
            pgbench.median_of(runs[kind], "p99_ms"),
            baseline_ratio=pgbench.median_of(runs[kind], "tps") / cold_tps,
            baseline="calls/s / calls/s of a card without events",
            setup={"cards_of_this_kind": args.hot_cards, "events_per_card": args.hot_events,
                   "clients": 1, "seconds": max(1, int(args.seconds)), "runs": args.repeats},
            runs=[r.tps for r in runs[kind]]))
    write_json("history_size", {
        "cards": args.cards,
        "repeats": args.repeats,
        "steps": [{"card_events_rows": rows, "one_client": [asdict(r) for r in one],
                   "eight_clients": [asdict(r) for r in eight],
                   "one_client_median": pgbench.combine(one),
                   "eight_clients_median": pgbench.combine(eight)}
                  for rows, one, eight in measured],
        "in_window": {"hot_cards": args.hot_cards, "events_per_card": args.hot_events,
                      "fraud_entry_limit": window["fraud_entry_limit"], "plans": plans,
                      "is_fraud": {kind: pgbench.combine(runs[kind]) for kind in KINDS}},
        "target_p50_ratio": TARGET_P50_RATIO,
        "p50_ratios": [median([r.p50_ms for r in one]) / base for _, one, _ in measured],
        "summary": summary,
    }, smoke=args.smoke)


if __name__ == "__main__":
    main()

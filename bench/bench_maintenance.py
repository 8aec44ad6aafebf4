"""How fast old data leaves: run_maintenance() dropping a past day's partitions of card_events
and of its history, against a DELETE of the same day's rows from a table without partitions,
measured in the same run: 1,000,000 events a day, durable commits.

Parameters, fixed before measuring (each figure's row and JSON repeat its own):
- embedded PostgreSQL with fsync and synchronous_commit on, otherwise idle; one past UTC
  day, 3 days before today (past the shortest retention the settings allow), the same day
  in every round;
- 3 rounds (--repeats), each:
  - the day's partitions created (create_partitions), then --events-per-day card_events
    rows (1,000,000) spread evenly over the day, card ids spread over 500,000 cards, the
    15 stations, a mix of entries, exits and purchases and of outcomes, in one INSERT ...
    SELECT by the schema's owner; rolled up by run_rollup(1,000,000) until nothing is
    pending, so card_history_second and station_second_slots hold the day too;
  - the baseline's table: the same rows copied into bench_events, a plain table (no
    partitions) with card_events' columns, primary key and indexes and no triggers
    (card_events refuses DELETE), which also holds the next day's --events-per-day rows
    (they stay);
  - VACUUM ANALYZE, and a CHECKPOINT before each timed statement: rows days old are past a
    checkpoint, so a DELETE writes whole pages to WAL, as it would in production;
  - the drop: settings.event_retention and history_retention set to 1 day (the least
    their CHECK allows; restored after), then `SELECT * FROM metro.run_maintenance()`
    timed on the client's clock around the call, its commit included (autocommit). Today's
    partitions exist beforehand, so the call only drops. Under load a drop waits for its
    lock (at most lock_timeout, 2 s) and is otherwise left for the next run;
  - the baseline: `DELETE FROM bench_events WHERE ts >= day AND ts < day + 1` and its
    commit, timed the same way. It removes the events only, not their history, and leaves
    its dead rows to VACUUM (not timed): the comparison favours the DELETE.
Target (the maintenance issue): run_maintenance() drops a day "in well under a second";
met when the median drop is under 1 s.

Checks (a failed one exits non-zero): before the drop, the day's card_events partition
holds --events-per-day rows and its card_history_second and station_second_slots partitions
count as many swipes, nothing pending; run_maintenance() reports the three partitions of
the day dropped and none busy, they are gone and card_events holds no row of the day; the
DELETE removes --events-per-day rows and leaves the next day's.

    python -m metro.bench.bench_maintenance [--events-per-day 1000000] [--repeats 3] [--smoke]
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from .bench_validate_entry import CARDS
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

EVENTS_PER_DAY = 1_000_000
DAYS_AGO = 3
ROLLUP_ROWS = 1_000_000
TABLES = ("card_events", "card_history_second", "station_second_slots")
TARGET_DROP_MS = 1000.0
# The day's rows: evenly spread from its midnight, the same mix as bench_history_size.
FILL = """
    INSERT INTO {table} (card_id, ts, station_id, activity_code, amount, accept)
    SELECT 1 + (n * 7919::bigint) %% %(cards)s,
           %(start)s::timestamptz + interval '1 day' * ((n - 1)::float8 / %(events)s),
           1 + n %% 15, (ARRAY[1, 1, -1, 2])[1 + n %% 4], 0,
           (ARRAY[1, 1, 1, 0, -1])[1 + n %% 5]
    FROM generate_series(1, %(events)s::bigint) n"""
COPY_DAY = """
    INSERT INTO public.bench_events (card_id, ts, station_id, activity_code, amount, accept)
    SELECT card_id, ts, station_id, activity_code, amount, accept FROM metro.card_events
    WHERE ts >= %s AND ts < %s"""


@dataclass
class Round:
    drop_ms: float
    delete_ms: float
    returned: list[tuple[Any, ...]]   # what run_maintenance() returned
    dropped_mb: float                 # the day's three partitions, indexes included
    deleted: int

    @property
    def ratio(self) -> float:
        return self.delete_ms / self.drop_ms


def one(conn: psycopg.Connection, query: Any, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def fill(conn: psycopg.Connection, table: str, day: date, events: int) -> int:
    return conn.execute(FILL.format(table=table), {
        "cards": CARDS, "start": midnight(day), "events": events}).rowcount


def midnight(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), UTC)


def partition(table: str, day: date) -> str:
    return f"{table}_p{day:%Y%m%d}"


def timed(conn: psycopg.Connection, query: str, params: Any = None) -> tuple[float, Any]:
    """ms on the client's clock for query and its commit (autocommit), after a CHECKPOINT."""
    conn.execute("CHECKPOINT")
    started = time.perf_counter()
    cursor = conn.execute(query, params)
    result = cursor.fetchall() if cursor.description else cursor.rowcount
    return (time.perf_counter() - started) * 1000, result


def prepare_day(conn: psycopg.Connection, day: date, events: int) -> float:
    """The day in card_events and its history, its rows copied into bench_events; the MB of
    the day's partitions."""
    created = conn.execute("SELECT action FROM metro.create_partitions(%s, %s)",
                           (day, day)).fetchall()
    check(created == [("created",)] * len(TABLES),
          f"create_partitions({day}) did {created}, not the day's {len(TABLES)} partitions")
    added = fill(conn, "metro.card_events", day, events)
    check(added == events, f"{added:,} card_events rows added, {events:,} asked")
    while True:  # in large rounds, as the worker would in small ones
        if not one(conn, "SELECT bool_or(full_round) FROM metro.run_rollup(%s)", (ROLLUP_ROWS,)):
            break
    pending = one(conn, "SELECT pending FROM metro.worker_lag() WHERE source = 'card_events'")
    check(pending == 0, f"{pending:,} card_events rows still pending after the rollup")
    counts = [one(conn, sql.SQL("SELECT {} FROM metro.{}").format(
        sql.SQL("count(*)" if table == "card_events" else "coalesce(sum(swipes), 0)"),
        sql.Identifier(partition(table, day)))) for table in TABLES]
    check(counts == [events] * len(TABLES),
          f"the day's partitions of {', '.join(TABLES)} count {counts}, not {events:,} each")
    copied = conn.execute(COPY_DAY, (midnight(day), midnight(day + timedelta(days=1)))).rowcount
    check(copied == events, f"{copied:,} rows copied into bench_events, {events:,} asked")
    conn.execute("VACUUM ANALYZE")
    size = one(conn, "SELECT sum(pg_total_relation_size(format('metro.%%I', p)::regclass))"
                     " FROM unnest(%s::text[]) p", ([partition(t, day) for t in TABLES],))
    return float(size) / 1e6


def drop_day(conn: psycopg.Connection, day: date) -> tuple[float, list[tuple[Any, ...]]]:
    """run_maintenance() with the day past retention: ms and what it returned."""
    kept = conn.execute("SELECT event_retention, history_retention FROM metro.settings"
                        ).fetchone()
    conn.execute("UPDATE metro.settings SET event_retention = '1 day',"
                 " history_retention = '1 day'")
    try:
        ms, returned = timed(conn, "SELECT * FROM metro.run_maintenance()")
    finally:
        conn.execute("UPDATE metro.settings SET event_retention = %s, history_retention = %s",
                     kept)
    dropped = sorted(r[2] for r in returned if r[0] == "dropped")
    check(dropped == sorted(partition(t, day) for t in TABLES)
          and not any(r[0] == "busy" for r in returned),
          f"run_maintenance() returned {returned}, not the day's partitions dropped")
    left = [t for t in TABLES if one(conn, "SELECT to_regclass(%s)",
                                     (f"metro.{partition(t, day)}",)) is not None]
    check(not left, f"partitions of {day} still there after run_maintenance(): {left}")
    rows = one(conn, "SELECT count(*) FROM metro.card_events WHERE ts >= %s AND ts < %s",
               (midnight(day), midnight(day + timedelta(days=1))))
    check(rows == 0, f"card_events still holds {rows:,} rows of {day}")
    return ms, returned


def delete_day(conn: psycopg.Connection, day: date, events: int) -> tuple[float, int]:
    """The baseline: DELETE of the day's rows from bench_events, committed."""
    ms, deleted = timed(conn, "DELETE FROM public.bench_events WHERE ts >= %s AND ts < %s",
                        (midnight(day), midnight(day + timedelta(days=1))))
    check(deleted == events, f"the DELETE removed {deleted:,} rows, not {events:,}")
    kept = one(conn, "SELECT count(*) FROM public.bench_events")
    check(kept == events, f"bench_events keeps {kept:,} rows of the next day, not {events:,}")
    return ms, deleted


def main(argv: list[str] | None = None) -> None:
    parser = arguments(__doc__)
    parser.add_argument("--events-per-day", type=int, default=EVENTS_PER_DAY,
                        help="card_events rows of the day dropped (and of the day kept)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.events_per_day, args.repeats = 2_000, 1
    events = args.events_per_day

    dsn = scratch_database("metro_bench_maintenance", smoke=args.smoke)
    rounds: list[Round] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        day = one(conn, "SELECT (now() AT TIME ZONE 'UTC')::date") - timedelta(days=DAYS_AGO)
        # Today's partitions now, so that the measured calls only drop (and the function
        # is compiled in this session, as in the worker's).
        conn.execute("SELECT * FROM metro.run_maintenance()")
        conn.execute("CREATE TABLE public.bench_events (LIKE metro.card_events INCLUDING ALL)")
        fill(conn, "public.bench_events", day + timedelta(days=1), events)
        for round_ in range(args.repeats):
            print(f"round {round_ + 1} of {args.repeats}: {events:,} events on {day} ...",
                  flush=True)
            size = prepare_day(conn, day, events)
            drop_ms, returned = drop_day(conn, day)
            delete_ms, deleted = delete_day(conn, day, events)
            rounds.append(Round(drop_ms, delete_ms, returned, size, deleted))

    drops, deletes = [r.drop_ms for r in rounds], [r.delete_ms for r in rounds]
    ratios = [r.ratio for r in rounds]
    drop = median(drops)
    print_table(f"a day leaving, {events:,} events of {day} and their history, durable commits,"
                " per round",
                ["round", "MB dropped (3 tables)", "run_maintenance() ms", "partitions dropped",
                 "DELETE ms", "rows deleted", "DELETE / drop"],
                [[n + 1, r.dropped_mb, r.drop_ms,
                  sum(row[0] == "dropped" for row in r.returned), r.delete_ms, r.deleted,
                  r.ratio] for n, r in enumerate(rounds)])
    print_table(f"a day leaving, median of {args.repeats} rounds (range)",
                ["measure", "median (range)", "target", "met"], [
                    ["run_maintenance() dropping the day, ms", spread_text(drops),
                     f"< {TARGET_DROP_MS / 1000:g} s",
                     "yes" if met(drop, TARGET_DROP_MS, False) else "no"],
                    ["DELETE of the day's rows (no partitions), ms", spread_text(deletes), "",
                     ""],
                    ["ratio DELETE / drop", spread_text(ratios), "", ""]])

    setup = {"events_per_day": events, "cards": CARDS, "runs": args.repeats}
    summary = [
        summary_row("run_maintenance() dropping a day", "partitions of card_events,"
                    " card_history_second and station_second_slots; autocommit",
                    drop, "ms", baseline_ratio=median(ratios),
                    baseline="DELETE ms / drop ms, per round", setup={**setup, "tables": 3},
                    runs=drops, target=f"< {TARGET_DROP_MS / 1000:g} s",
                    met=met(drop, TARGET_DROP_MS, higher_is_better=False)),
        summary_row("DELETE of the same day's rows, no partitions (baseline)",
                    f"events only, from {2 * events:,} rows; its VACUUM not timed",
                    median(deletes), "ms", setup={**setup, "tables": 1}, runs=deletes),
    ]
    write_json("maintenance", {
        "events_per_day": events,
        "cards": CARDS,
        "day": day,
        "repeats": args.repeats,
        "drop_ms": spread(drops),
        "delete_ms": spread(deletes),
        "ratio_delete_to_drop": spread(ratios),
        "rounds": [{**asdict(r), "ratio": r.ratio} for r in rounds],
        "targets": {"drop_ms": TARGET_DROP_MS},
        "summary": summary,
    }, smoke=args.smoke)


if __name__ == "__main__":
    main()

"""Is the producer the bottleneck? Offered rate against a trivial function, then against
validate_entry at the rates the database sustains.

Parameters, fixed before measuring: 200,000 generated cards (--cards), 8 s per run
(--seconds), 3 runs per setting (--repeat). Each run is `producers riders` in this
process (open loop, latency from the scheduled send time, no fraud bursts): first
against metro.bench_noop, a SQL function that only returns a decision, at 10,000,
15,000 and 20,000 entries/s in pipeline mode (4 connections) and 10,000/s in async
mode (16 connections); then against validate_entry (pipeline) at 1,000, 2,000,
3,000, 4,000 and 6,000/s until the database no longer keeps up. Every run's
simulated clock starts two hours after the previous one, so the fraud rules see
each run alone. Producer CPU is this process's CPU time over the run's wall time.

A rate counts as kept only when the median run kept it (at least 2 of 3 runs: sent
on time and achieved); each figure is the median of the runs with their range.

Checks (a failed one exits non-zero): no call ended in an error; against
validate_entry, card_events grew by exactly one row per answered call.

    python -m metro.bench.bench_producers [--seconds 8] [--repeat 3] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import math
import os
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from metro.calls import Call

from ..producers import cards, line, reference
from ..producers.engine import Run
from ..producers.events import Entry, Exit
from ..producers.riders import Riders
from ..producers.sinks import Calls, DirectSink, swipe_arguments
from .common import (
    MIN_RUNS,
    check,
    median,
    print_table,
    scratch_database,
    spread,
    spread_text,
    summary_row,
    write_json,
)

CARDS = 200_000
NOOP_RATES: tuple[int, ...] = (10_000, 15_000, 20_000)
ASYNC_NOOP_RATES: tuple[int, ...] = (10_000,)
VALIDATE_RATES: tuple[int, ...] = (1_000, 2_000, 3_000, 4_000, 6_000)
NOOP_FUNCTION = """
CREATE OR REPLACE FUNCTION metro.bench_noop(card_id bigint, station_id integer, ts timestamptz)
RETURNS metro.decision LANGUAGE sql AS $$ SELECT ROW(true, 'ok')::metro.decision $$
"""
NOOP = Call("bench_noop", "SELECT accepted, message FROM metro.bench_noop("
                 "%s::bigint, %s::integer, %s::timestamptz)")
NOOP_CALLS: Calls = {Entry: (NOOP, swipe_arguments), Exit: (NOOP, swipe_arguments)}


def prepare(dsn: str, count: int = CARDS) -> None:
    output = io.StringIO()
    today = datetime.now(UTC).date()
    cards.write_csv(cards.generate(count, today, seed=1), output, today)
    with psycopg.connect(dsn, autocommit=True) as conn:
        with conn.cursor().copy("COPY metro.cards FROM STDIN (FORMAT csv, HEADER true)") as copy:
            copy.write(output.getvalue())
        conn.execute(NOOP_FUNCTION)
        conn.execute("VACUUM ANALYZE metro.cards")


def run_once(dsn: str, *, function: str, mode: str, rate: int, seconds: float,
             start_ts: datetime) -> dict[str, Any]:
    with psycopg.connect(dsn) as conn:
        riders = Riders(rate=rate, cards=reference.load_cards(conn, None),
                        stations=reference.load_stations(conn), line=line.load_line(),
                        start_ts=start_ts, horizon=seconds, rng=random.Random(rate),
                        fraud_ratio=0.0)
    connections = 4 if mode == "pipeline" else 16
    sink = DirectSink(dsn, mode=mode, connections=connections, report=print,
                      calls=NOOP_CALLS if function == "bench_noop" else None)
    run = Run(riders, sink, display_interval=seconds * 2, print_line=lambda _: None)
    events_before = _events(dsn)
    cpu, wall = time.process_time(), time.perf_counter()
    summary = asyncio.run(run.run()).summary
    cpu_share = (time.process_time() - cpu) / (time.perf_counter() - wall)
    outcomes = summary["outcomes"]
    check(outcomes["errors"] == 0, f"{function} {mode} {rate}/s: {outcomes['errors']} errors")
    if function == "validate_entry":
        answered = outcomes["accepted"] + outcomes["rejected"] + outcomes["fraud"]
        recorded = _events(dsn) - events_before
        check(recorded == answered, f"validate_entry {rate}/s: {answered:,} calls answered,"
                                    f" {recorded:,} card events recorded")
    return {"function": function, "mode": mode, "connections": connections, "rate": rate,
            "producer_cpu": round(cpu_share, 3), "load_average": os.getloadavg()[0], **summary}


def _events(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM metro.card_events").fetchone()
    assert row is not None
    return int(row[0])


def row(result: dict[str, Any]) -> list[Any]:
    latency = result["latency_ms"]
    late = 100 * result["late"] / max(result["sent"], 1)
    return [result["function"], result["mode"], result["connections"], result["rate"],
            result["achieved_rate"], latency["p50"], latency["p99"], result["max_send_lag_ms"],
            f"{late:.1f}%", f"{100 * result['producer_cpu']:.0f}%",
            f"{result['load_average']:.1f}", "yes" if result["rate_kept"] else "no"]


def median_run_kept(runs: list[dict[str, Any]]) -> bool:
    """Whether the median run kept the rate: a majority of the runs did."""
    return median([1.0 if run["rate_kept"] else 0.0 for run in runs]) == 1.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--repeat", type=int, default=MIN_RUNS)
    parser.add_argument("--cards", type=int, default=CARDS)
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny run that proves the benchmark works (no figures)")
    args = parser.parse_args(argv)
    noop_rates, async_rates, validate_rates = NOOP_RATES, ASYNC_NOOP_RATES, VALIDATE_RATES
    if args.smoke:
        args.seconds, args.repeat, args.cards = 1.0, 1, 2_000
        noop_rates, async_rates, validate_rates = (200,), (200,), (100,)

    dsn = scratch_database("metro_bench_producers", smoke=args.smoke)
    prepare(dsn, args.cards)
    clock = datetime.now(UTC)
    plan = ([("bench_noop", "pipeline", rate) for rate in noop_rates]
            + [("bench_noop", "async", rate) for rate in async_rates])
    results: list[dict[str, Any]] = []
    settings: list[dict[str, Any]] = []

    def measure(function: str, mode: str, rate: int) -> bool:
        nonlocal clock
        runs = []
        for _ in range(args.repeat):
            clock += timedelta(hours=2)
            result = run_once(dsn, function=function, mode=mode, rate=rate,
                              seconds=args.seconds, start_ts=clock)
            print(f"{function} {mode} {rate}/s: achieved {result['achieved_rate']}/s, "
                  f"p99 {result['latency_ms']['p99']} ms, kept {result['rate_kept']}", flush=True)
            runs.append(result)
        results.extend(runs)
        kept = median_run_kept(runs)
        settings.append({"function": function, "mode": mode, "rate": rate,
                         "connections": runs[0]["connections"], "kept": kept,
                         "runs_kept": sum(run["rate_kept"] for run in runs),
                         "achieved_rate": spread([run["achieved_rate"] for run in runs]),
                         "p50_ms": spread([run["latency_ms"]["p50"] for run in runs]),
                         "p95_ms": spread([run["latency_ms"].get("p95", math.nan)
                                           for run in runs]),
                         "p99_ms": spread([run["latency_ms"]["p99"] for run in runs]),
                         "producer_cpu": spread([run["producer_cpu"] for run in runs])})
        return kept

    for function, mode, rate in plan:
        measure(function, mode, rate)
    for rate in validate_rates:
        if not measure("validate_entry", "pipeline", rate):
            break  # the database no longer keeps up: higher rates say nothing new

    print_table(f"producers riders, {args.seconds:g} s per run, {args.cards:,} cards, "
                f"{os.cpu_count()} CPUs shared by the producer and PostgreSQL",
                ["function", "mode", "connections", "target/s", "achieved/s", "p50 ms",
                 "p99 ms", "max send lag ms", "late sends", "producer CPU", "load avg",
                 "kept"],
                [row(result) for result in results])
    print_table(f"per setting: median of {args.repeat} runs (range); kept when the median run"
                " kept it",
                ["function", "mode", "target/s", "achieved/s (range)", "p50 ms", "p99 ms",
                 "runs kept", "kept"],
                [[found["function"], found["mode"], found["rate"],
                  spread_text(found["achieved_rate"]["runs"]), found["p50_ms"]["median"],
                  found["p99_ms"]["median"], f"{found['runs_kept']} of {args.repeat}",
                  "yes" if found["kept"] else "no"] for found in settings])
    summary = [summary_row(f"producers riders against {found['function']}",
                           f"{found['mode']}, {found['rate']:,}/s offered, kept in"
                           f" {found['runs_kept']} of {args.repeat} runs",
                           found["achieved_rate"]["median"], "calls/s",
                           found["p50_ms"]["median"], found["p95_ms"]["median"],
                           found["p99_ms"]["median"],
                           baseline_ratio=found["achieved_rate"]["median"] / found["rate"],
                           baseline="achieved / offered",
                           setup={"cards": args.cards, "seconds": args.seconds,
                                  "connections": found["connections"], "mode": found["mode"],
                                  "offered_per_s": found["rate"], "runs": args.repeat},
                           runs=found["achieved_rate"]["runs"],
                           target="rate kept by the median run", met=found["kept"])
               for found in settings]
    write_json("producers", {"seconds": args.seconds, "repeat": args.repeat,
                             "cards": args.cards, "settings": settings, "runs": results,
                             "summary": summary}, smoke=args.smoke)


if __name__ == "__main__":
    main()

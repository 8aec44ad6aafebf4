"""Is the producer the bottleneck? Offered rate against a trivial function, then against
validate_entry at the rates the database sustains.

Each run is `producers riders` in this process (open loop, latency from the scheduled
send time) for --seconds: first against metro.bench_noop, a SQL function that only
returns a decision, at 10,000 entries/s and more in both modes; then against
validate_entry at rising rates until the database no longer keeps up. Every run's
simulated clock starts two hours after the previous one, so the fraud rules see
each run alone. Producer CPU is this process's CPU time over the run's wall time.

    python -m metro.bench.bench_producers [--seconds 8] [--repeat 2]
"""

from __future__ import annotations

import argparse
import asyncio
import io
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
from .common import print_table, scratch_database, summary_row, write_json

CARDS = 200_000
NOOP_RATES = (10_000, 15_000, 20_000)
ASYNC_NOOP_RATES = (10_000,)
VALIDATE_RATES = (1_000, 2_000, 3_000, 4_000, 6_000)
NOOP_FUNCTION = """
CREATE OR REPLACE FUNCTION metro.bench_noop(card_id bigint, station_id integer, ts timestamptz)
RETURNS metro.decision LANGUAGE sql AS $$ SELECT ROW(true, 'ok')::metro.decision $$
"""
NOOP = Call("bench_noop", "SELECT accepted, message FROM metro.bench_noop("
                 "%s::bigint, %s::integer, %s::timestamptz)")
NOOP_CALLS: Calls = {Entry: (NOOP, swipe_arguments), Exit: (NOOP, swipe_arguments)}


def prepare(dsn: str) -> None:
    output = io.StringIO()
    today = datetime.now(UTC).date()
    cards.write_csv(cards.generate(CARDS, today, seed=1), output, today)
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
    cpu, wall = time.process_time(), time.perf_counter()
    summary = asyncio.run(run.run()).summary
    cpu_share = (time.process_time() - cpu) / (time.perf_counter() - wall)
    return {"function": function, "mode": mode, "connections": connections, "rate": rate,
            "producer_cpu": round(cpu_share, 3), "load_average": os.getloadavg()[0], **summary}


def row(result: dict[str, Any]) -> list[Any]:
    latency = result["latency_ms"]
    late = 100 * result["late"] / max(result["sent"], 1)
    return [result["function"], result["mode"], result["connections"], result["rate"],
            result["achieved_rate"], latency["p50"], latency["p99"], result["max_send_lag_ms"],
            f"{late:.1f}%", f"{100 * result['producer_cpu']:.0f}%",
            f"{result['load_average']:.1f}", "yes" if result["rate_kept"] else "no"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)

    dsn = scratch_database("metro_bench_producers")
    prepare(dsn)
    clock = datetime.now(UTC)
    plan = ([("bench_noop", "pipeline", rate) for rate in NOOP_RATES]
            + [("bench_noop", "async", rate) for rate in ASYNC_NOOP_RATES])
    results: list[dict[str, Any]] = []

    def measure(function: str, mode: str, rate: int) -> bool:
        nonlocal clock
        kept = False
        for _ in range(args.repeat):
            clock += timedelta(hours=2)
            result = run_once(dsn, function=function, mode=mode, rate=rate,
                              seconds=args.seconds, start_ts=clock)
            print(f"{function} {mode} {rate}/s: achieved {result['achieved_rate']}/s, "
                  f"p99 {result['latency_ms']['p99']} ms, kept {result['rate_kept']}", flush=True)
            results.append(result)
            kept = kept or result["rate_kept"]
        return kept

    for function, mode, rate in plan:
        measure(function, mode, rate)
    for rate in VALIDATE_RATES:
        if not measure("validate_entry", "pipeline", rate):
            break  # the database no longer keeps up: higher rates say nothing new

    print_table(f"producers riders, {args.seconds:g} s per run, {CARDS:,} cards, "
                f"{os.cpu_count()} CPUs shared by the producer and PostgreSQL",
                ["function", "mode", "connections", "target/s", "achieved/s", "p50 ms",
                 "p99 ms", "max send lag ms", "late sends", "producer CPU", "load avg",
                 "kept"],
                [row(result) for result in results])
    summary = [summary_row(f"producers riders against {r['function']}",
                           f"{r['mode']}, {r['rate']:,}/s offered", r["achieved_rate"],
                           "calls/s", r["latency_ms"]["p50"], r["latency_ms"].get("p95"),
                           r["latency_ms"]["p99"], baseline_ratio=r["achieved_rate"] / r["rate"],
                           baseline="achieved / offered")
               for r in results]
    write_json("producers", {"seconds": args.seconds, "repeat": args.repeat, "cards": CARDS,
                             "runs": results, "summary": summary})


if __name__ == "__main__":
    main()

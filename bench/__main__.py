"""Every benchmark in one run, one markdown table, one JSON file.

    python -m metro.bench [--quick | --smoke] [--only validate_entry,loader]   (or: metro bench ...)

Each benchmark runs in its own process (python -m metro.bench.bench_<name>), prints
its own detailed table, and writes bench/results/<name>.json with a "summary"
list; this runner collects those summaries into one table and writes
bench/results/suite.json. Every figure is the median of at least 3 runs, shown
with the range of the runs and its setup; a target is met when the median meets
it. A benchmark whose own checks fail exits non-zero and is shown as FAILED.
--quick shortens every run (for a first look, not for the README); --smoke runs
each benchmark at a tiny size to prove it works (what tests/test_bench_smoke.py
does).
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from typing import Any

from metro import config

from .common import exit_on_sigterm, print_table, results_dir, write_json

# name, full-run arguments, quick-run arguments
BENCHMARKS: list[tuple[str, list[str], list[str]]] = [
    ("validate_entry", [], ["--seconds", "3"]),
    ("worker_lag", [], ["--seconds", "3"]),
    ("history_size", [], ["--sizes", "0,1000000", "--seconds", "3"]),
    ("maintenance", [], ["--events-per-day", "200000"]),
    ("loader", [], ["--rows", "100000"]),
    ("bridge", [], ["--rows", "20000", "--seconds", "3"]),
    ("producers", [], ["--seconds", "3"]),
    ("risk", [], ["--payments", "5000"]),
    ("dashboard", [], ["--seconds", "5"]),
]
COLUMNS = ["benchmark", "workload", "parameters", "setup", "median (range, runs)", "p50 ms",
           "p95 ms", "p99 ms", "ratio", "ratio of", "target", "met"]


def _number(value: Any, digits: int = 2) -> str:
    if value is None:
        return ""
    return f"{value:,.{digits}f}" if value < 100 else f"{value:,.0f}"


def _setup(setup: dict[str, Any]) -> str:
    return ", ".join(f"{key} {value:,}" if isinstance(value, int) else f"{key} {value}"
                     for key, value in setup.items())


def _throughput(row: dict[str, Any]) -> str:
    text = f"{_number(row['throughput'])} {row['unit']}"
    if row.get("runs", 1) > 1:
        text += f" ({_number(row['min'])}-{_number(row['max'])}, {row['runs']} runs)"
    else:
        text += " (1 run)"
    return text


def table_rows(name: str, summary: list[dict[str, Any]]) -> list[list[str]]:
    return [[name, row["workload"], row["parameters"], _setup(row.get("setup") or {}),
             _throughput(row), _number(row["p50_ms"]), _number(row["p95_ms"]),
             _number(row["p99_ms"]),
             "" if row["baseline_ratio"] is None else f"{row['baseline_ratio']:.2f}",
             row["baseline"] or "", row.get("target") or "",
             "" if row.get("met") is None else ("yes" if row["met"] else "no")]
            for row in summary]


def main(argv: list[str] | None = None) -> int:
    names = [name for name, _, _ in BENCHMARKS]
    argv = sys.argv[1:] if argv is None else argv
    # `metro bench` runs this program and passes the name the user typed (--prog).
    prog = argv[argv.index("--prog") + 1] if "--prog" in argv[:-1] else "python -m metro.bench"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs, for a first look")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny runs that prove every benchmark works (no figures)")
    parser.add_argument("--only", default="", metavar="NAMES",
                        help=f"comma-separated benchmark names, from: {', '.join(names)}")
    parser.add_argument("--prog", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    chosen = {name.strip() for name in args.only.split(",") if name.strip()}
    unknown = chosen - {name for name, _, _ in BENCHMARKS}
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}; "
                     f"valid names: {', '.join(names)}")

    signal.signal(signal.SIGTERM, exit_on_sigterm)  # run_benchmark passes it on
    rows: list[list[str]] = []
    runs: dict[str, Any] = {}
    for name, full, quick in BENCHMARKS:
        if chosen and name not in chosen:
            continue
        print(f"\n=== {name} ===", flush=True)
        smoke_dir = args.smoke and config.bench_results_dir() is None
        path = results_dir() / ("smoke" if smoke_dir else "") / f"{name}.json"
        path.unlink(missing_ok=True)  # an older run's file is not this run's result
        started = time.monotonic()
        extra = ["--smoke"] if args.smoke else quick if args.quick else full
        returncode = run_benchmark([sys.executable, "-m", f"metro.bench.bench_{name}", *extra])
        seconds = time.monotonic() - started
        if returncode != 0 or not path.exists():
            runs[name] = {"failed": True, "exit_code": returncode, "seconds": seconds}
            rows.append([name, f"FAILED (exit {returncode})", *[""] * (len(COLUMNS) - 2)])
            continue
        summary = json.loads(path.read_text()).get("summary", [])
        runs[name] = {"seconds": seconds, "summary": summary}
        rows += table_rows(name, summary)

    label = " (smoke: no figures)" if args.smoke else " (quick)" if args.quick else ""
    print_table("metro benchmarks" + label, COLUMNS, rows)
    write_json("suite", {"quick": args.quick, "benchmarks": runs}, smoke=args.smoke)
    return 1 if any(run.get("failed") for run in runs.values()) else 0


def run_benchmark(command: list[str]) -> int:
    """Runs one benchmark and returns its exit code. Stopped with SIGTERM, the runner
    passes it on and waits, so the benchmark drops its scratch database before both
    exit."""
    with subprocess.Popen(command) as benchmark:
        try:
            return benchmark.wait()
        except SystemExit:
            benchmark.terminate()
            raise


if __name__ == "__main__":
    sys.exit(main())

"""Loader throughput: a 500,000-row card file, clean and with 1% bad rows scattered through it.

Parameters, fixed before measuring: a 500,000-row card file (--rows), the loader's
default batch (50,000 rows per COPY and transaction), 3 runs of each file
(--repeat), the three files taking turns (clean, 1% bad, 1% bad the PostgreSQL < 17
way, then again). Each run loads into a fresh database and times the `loader`
command end to end (interpreter start included). The bad-row file is also loaded
the way servers before PostgreSQL 17 load it (no COPY ON_ERROR: every bad row is
found by a failed attempt). The baseline takes its turn with them: the clean file
loaded by psql's `\\copy` into the same table of a fresh database (a raw COPY, the
usual way to load a CSV, timed end to end the same way); each loader figure is also
given as its ratio to that baseline, per round. Each figure is the median of the runs
with their range; a target is met when the median meets it.

Checks (a failed one exits non-zero): the loader's exit status and its summary
line (read, loaded, invalid) are exactly what the file holds, and so is the table;
the raw COPY loaded every row.

Run: .venv/bin/python -m metro.bench.bench_loader [--rows N] [--repeat N] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from metro import embedded

from .common import (
    MIN_RUNS,
    check,
    median,
    met,
    print_table,
    scratch_database,
    spread,
    spread_text,
    summary_row,
    write_json,
)

TARGETS = {"clean": 300_000, "1% bad": 100_000, "1% bad, PostgreSQL < 17 path": 100_000}
# The loader as a server without COPY ON_ERROR sees it.
_WITHOUT_ON_ERROR = ("from metro.loader import cli, copying; copying.ON_ERROR_FROM = 10**9; "
                     "raise SystemExit(cli.main())")
_BAD_KINDS = ("text in a number column", "bad timestamp", "CHECK violation",
              "duplicate key", "wrong column count")


def card_row(rnd: random.Random, card_id: int) -> str:
    unlimited = rnd.random() < 0.2
    expires = f"2027-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d} 00:00:00+00" \
        if unlimited else ""
    enabled = 1 if rnd.random() < 0.98 else 0
    return (f"{card_id},{enabled},{int(unlimited)},{rnd.randint(0, 20_000)},{expires},"
            f"Rider {card_id},555-{card_id % 10_000:04d},rider{card_id}@example.com,"
            f"{rnd.randint(0, 2)}\n")


def bad_row(rnd: random.Random, card_id: int, kind: str) -> str:
    good = card_row(rnd, card_id).rstrip("\n").split(",")
    if kind == "text in a number column":
        good[3] = "lots"
    elif kind == "bad timestamp":
        good[2], good[4] = "1", "2027-02-30 25:00:00"
    elif kind == "CHECK violation":
        good[8] = "7"
    elif kind == "duplicate key":
        good[0] = str(card_id % 1_000)  # the first 1,000 cards are never bad
    else:
        good = good[:5]
    return ",".join(good) + "\n"


def write_cards(path: Path, rows: int, bad_fraction: float, seed: int = 7) -> int:
    """A deterministic card file; returns how many rows are bad."""
    rnd = random.Random(seed)
    bad_at = set(rnd.sample(range(1_001, rows), int(rows * bad_fraction)))
    with open(path, "w") as out:
        out.write("card_id,enabled,card_type,balance,expires,name,phone,email,notify\n")
        for card_id in range(rows):
            if card_id in bad_at:
                out.write(bad_row(rnd, card_id, _BAD_KINDS[card_id % len(_BAD_KINDS)]))
            else:
                out.write(card_row(rnd, card_id))
    return len(bad_at)


_smoke_dsn: list[str] = []


def fresh_database(smoke: bool) -> str:
    """A database with the schema and no cards (a smoke run empties one database instead of
    making new ones)."""
    if smoke and _smoke_dsn:
        with psycopg.connect(_smoke_dsn[0], autocommit=True) as conn:
            conn.execute("TRUNCATE metro.cards")
        return _smoke_dsn[0]
    dsn = scratch_database("metro_bench_loader", smoke=smoke)
    if smoke:
        _smoke_dsn.append(dsn)
    return dsn


def check_cards(dsn: str, expected: int) -> None:
    with psycopg.connect(dsn) as conn:
        count = conn.execute("SELECT count(*) FROM metro.cards").fetchone()
    check(count is not None and count[0] == expected,
          f"cards holds {count} rows, expected {expected}")


def copy_once(path: Path, rows: int, smoke: bool = False) -> dict[str, Any]:
    """The baseline: the clean file through psql's \\copy, nothing checked or reported."""
    dsn = fresh_database(smoke)
    command = [str(embedded.bin_dir() / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
               "-d", dsn, "-c", f"\\copy metro.cards FROM '{path}' (FORMAT csv, HEADER true)"]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    check(result.returncode == 0, f"raw COPY failed {result.returncode}: {result.stderr}")
    check_cards(dsn, rows)
    return {"seconds": seconds, "rows_per_second": rows / seconds}


def run_once(path: Path, rows: int, bad: int, report_dir: Path,
             on_error: bool, smoke: bool = False) -> dict[str, Any]:
    dsn = fresh_database(smoke)
    env = {**os.environ, "METRO_DATABASE_URL": dsn}
    loader = [str(Path(sys.executable).parent / "loader")] if on_error else \
        [sys.executable, "-c", _WITHOUT_ON_ERROR]
    command = [*loader, "--header", "--max-errors", "-1",
               "--reportdir", str(report_dir), "--table", "cards", str(path)]
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    expected = f"read {rows}, loaded {rows - bad}, invalid {bad}"
    check(result.returncode == (1 if bad else 0) and expected in result.stdout,
          f"unexpected loader result {result.returncode}: {result.stdout}{result.stderr}")
    check_cards(dsn, rows - bad)
    return {"seconds": seconds, "rows_per_second": rows / seconds}


RAW_COPY = "raw COPY (psql \\copy), clean file"
SCENARIOS = (("clean", 0.0, True), ("1% bad", 0.01, True),
             ("1% bad, PostgreSQL < 17 path", 0.01, False))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--repeat", type=int, default=MIN_RUNS)
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny run that proves the benchmark works (no figures)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rows, args.repeat = 3_000, 1

    results: dict[str, Any] = {"rows": args.rows, "repeat": args.repeat, "scenarios": {}}
    table = []
    with tempfile.TemporaryDirectory(prefix="bench-loader-") as tmp:
        files = {}
        for scenario, fraction, _ in SCENARIOS:
            path = Path(tmp) / f"cards-{fraction}.csv"
            files[scenario] = (path, write_cards(path, args.rows, fraction))
        runs: dict[str, list[dict[str, Any]]] = {scenario: [] for scenario, _, _ in SCENARIOS}
        copies: list[dict[str, Any]] = []
        for _ in range(args.repeat):  # the files and the baseline take turns
            for scenario, _, on_error in SCENARIOS:
                path, bad = files[scenario]
                runs[scenario].append(run_once(path, args.rows, bad, Path(tmp) / "log",
                                               on_error, args.smoke))
            copies.append(copy_once(files["clean"][0], args.rows, args.smoke))
        copy_rates = [run["rows_per_second"] for run in copies]
        results["raw_copy"] = {"runs": copies, "rows_per_second": spread(copy_rates)}
        table.append([RAW_COPY, args.rows, 0, median([r["seconds"] for r in copies]),
                      spread_text(copy_rates), "", "", ""])
        for scenario, _, _ in SCENARIOS:
            path, bad = files[scenario]
            rates = [run["rows_per_second"] for run in runs[scenario]]
            middle = median(rates)
            target = TARGETS[scenario]
            ratios = [rate / copy for rate, copy in zip(rates, copy_rates, strict=True)]
            results["scenarios"][scenario] = {
                "bad_rows": bad, "file_bytes": path.stat().st_size, "runs": runs[scenario],
                "rows_per_second": spread(rates), "target_rows_per_second": target,
                "ratio_to_raw_copy": spread(ratios), "met": met(middle, target)}
            table.append([scenario, args.rows, bad, median([r["seconds"]
                                                            for r in runs[scenario]]),
                          spread_text(rates), spread_text(ratios), target,
                          "yes" if met(middle, target) else "no"])
    print_table(f"loader: {args.rows:,}-row card file, median of {args.repeat} runs each"
                " (range); ratio to the raw COPY of the clean file, per round",
                ["file", "rows", "bad rows", "median s", "rows/s (range)",
                 "x raw COPY (range)", "target rows/s", "met (median)"], table)
    results["summary"] = [
        summary_row(RAW_COPY, f"{args.rows:,} cards", results["raw_copy"]["rows_per_second"][
                        "median"], "rows/s", setup={"rows": args.rows, "runs": args.repeat},
                    runs=copy_rates),
        *(summary_row(f"loader, {scenario} file", f"{args.rows:,} cards",
                      found["rows_per_second"]["median"], "rows/s",
                      baseline_ratio=found["ratio_to_raw_copy"]["median"],
                      baseline="raw COPY of the clean file, per round",
                      setup={"rows": args.rows, "bad_rows": found["bad_rows"],
                             "batch": 50_000, "runs": args.repeat},
                      runs=found["rows_per_second"]["runs"],
                      target=f">= {found['target_rows_per_second']:,} rows/s",
                      met=found["met"])
          for scenario, found in results["scenarios"].items())]
    write_json("loader", results, smoke=args.smoke)


if __name__ == "__main__":
    main()

"""Loader throughput: a 500,000-row card file, clean and with 1% bad rows scattered through it.

Each run loads into a fresh database and times the `loader` command end to
end (interpreter start included), then checks the table and the summary.
The bad-row file is also loaded the way servers before PostgreSQL 17 load it
(no COPY ON_ERROR: every bad row is found by a failed attempt).
Run: .venv/bin/python -m metro.bench.bench_loader [--rows N] [--repeat N]
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

from .common import print_table, scratch_database, summary_row, write_json

TARGETS = {"clean": 300_000, "1% bad": 100_000, "1% bad, PostgreSQL < 17 path": 100_000}
# The loader as a server without COPY ON_ERROR sees it.
_WITHOUT_ON_ERROR = ("from loader import cli, copying; copying.ON_ERROR_FROM = 10**9; "
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


def run_once(path: Path, rows: int, bad: int, report_dir: Path,
             on_error: bool) -> dict[str, Any]:
    dsn = scratch_database("metro_bench_loader")
    env = {**os.environ, "METRO_DATABASE_URL": dsn}
    loader = [str(Path(sys.executable).parent / "loader")] if on_error else \
        [sys.executable, "-c", _WITHOUT_ON_ERROR]
    command = [*loader, "--header", "--max-errors", "-1",
               "--reportdir", str(report_dir), "--table", "cards", str(path)]
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    expected = f"read {rows}, loaded {rows - bad}, invalid {bad}"
    if result.returncode != (1 if bad else 0) or expected not in result.stdout:
        raise SystemExit(f"unexpected loader result {result.returncode}: "
                         f"{result.stdout}{result.stderr}")
    with psycopg.connect(dsn) as conn:
        count = conn.execute("SELECT count(*) FROM metro.cards").fetchone()
    if count is None or count[0] != rows - bad:
        raise SystemExit(f"cards holds {count} rows, expected {rows - bad}")
    return {"seconds": seconds, "rows_per_second": rows / seconds}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    results: dict[str, Any] = {"rows": args.rows, "scenarios": {}}
    table = []
    with tempfile.TemporaryDirectory(prefix="bench-loader-") as tmp:
        for scenario, fraction, on_error in (("clean", 0.0, True), ("1% bad", 0.01, True),
                                             ("1% bad, PostgreSQL < 17 path", 0.01, False)):
            path = Path(tmp) / f"cards-{fraction}.csv"
            bad = write_cards(path, args.rows, fraction)
            runs = [run_once(path, args.rows, bad, Path(tmp) / "log", on_error)
                    for _ in range(args.repeat)]
            rates = sorted(run["rows_per_second"] for run in runs)
            best, worst = rates[-1], rates[0]
            results["scenarios"][scenario] = {
                "bad_rows": bad, "file_bytes": path.stat().st_size, "runs": runs,
                "best_rows_per_second": best, "worst_rows_per_second": worst,
                "target_rows_per_second": TARGETS[scenario], "met": best >= TARGETS[scenario]}
            table.append([scenario, args.rows, bad, min(r["seconds"] for r in runs),
                          int(best), int(worst), TARGETS[scenario],
                          "yes" if best >= TARGETS[scenario] else "no"])
    print_table(f"loader: {args.rows:,}-row card file, {args.repeat} runs each",
                ["file", "rows", "bad rows", "best s", "best rows/s", "worst rows/s",
                 "target rows/s", "met"], table)
    results["summary"] = [
        summary_row(f"loader, {scenario} file", f"{args.rows:,} cards, best of {args.repeat}",
                    found["best_rows_per_second"], "rows/s")
        for scenario, found in results["scenarios"].items()]
    write_json("loader", results)


if __name__ == "__main__":
    main()

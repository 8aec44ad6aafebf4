"""What watching costs: validate_entry with the dashboard open and Prometheus scraping,
against validate_entry alone, in the same run.

Parameters, fixed before measuring: 100,000 cards (--cards), 8 clients, 15 s per run
(--seconds), 3 rounds (--repeats). Each round runs validate_entry closed-loop twice,
alternating which goes first: once alone, once while `metro dashboard` serves one page's
live feed (the server-sent events a browser reads, one snapshot a second) and /metrics is
scraped every 5 s. The figure is the median of the rounds with its range; the target is
at least 95% of the rate alone.

Checks (a failed one exits non-zero): every run adds one card event per swipe; the feed
delivered at least one snapshot per second of the run and every scrape answered 200.

Run: .venv/bin/python -m metro.bench.bench_dashboard [--seconds 15] [--repeats 3] [--smoke]
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any

from . import pgbench
from .bench_validate_entry import EVENTS, SWIPE, prepare
from .common import (
    arguments,
    check,
    median,
    met,
    print_table,
    scratch_database,
    spread_text,
    summary_row,
    write_json,
)

CARDS = 100_000
CLIENTS = 8
SCRAPE_SECONDS = 5.0
TARGET = 0.95


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Watchers:
    """`metro dashboard` with one live page (its event stream) and a Prometheus scraper."""

    def __init__(self, dsn: str) -> None:
        self.port = free_port()
        env = {**os.environ, "METRO_DATABASE_URL": dsn}
        env.pop("METRO_KAFKA", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "metro.app.cli", "dashboard", "--port", str(self.port)],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True)
        self.stop = threading.Event()
        self.snapshots = 0
        self.scrapes: list[int] = []
        self._wait_listening()
        self.threads = [threading.Thread(target=self._feed, daemon=True),
                        threading.Thread(target=self._scrape, daemon=True)]
        for thread in self.threads:
            thread.start()

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                error = self.process.stderr.read() if self.process.stderr else ""
                check(False, f"metro dashboard exited: {error.strip()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                check(time.monotonic() < deadline, "metro dashboard did not listen in 30 s")
                time.sleep(0.1)

    def _feed(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        connection.request("GET", "/events")
        response = connection.getresponse()
        while not self.stop.is_set():
            line = response.readline()
            if not line:
                return
            if line.startswith(b"data:"):
                self.snapshots += 1
        connection.close()

    def _scrape(self) -> None:
        while not self.stop.wait(SCRAPE_SECONDS):
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            connection.request("GET", "/metrics")
            response = connection.getresponse()
            response.read()
            self.scrapes.append(response.status)
            connection.close()

    def close(self) -> None:
        self.stop.set()
        self.process.terminate()
        self.process.wait(15)


def main(argv: list[str] | None = None) -> None:
    parser = arguments(__doc__, seconds=15, cards=CARDS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.seconds, args.repeats, args.cards = 2, 1, 2_000
    dsn = scratch_database("metro_bench_dashboard", smoke=args.smoke)
    print(f"loading {args.cards:,} cards ...", flush=True)
    prepare(dsn, args.cards)
    swipe = SWIPE.format(cards=args.cards)
    if not args.smoke:
        pgbench.run(dsn, "warm-up", swipe, clients=CLIENTS, seconds=5)

    alone: list[pgbench.Run] = []
    watched: list[pgbench.Run] = []
    for round_ in range(args.repeats):
        print(f"round {round_ + 1} of {args.repeats} ...", flush=True)
        for with_watchers in ((False, True) if round_ % 2 == 0 else (True, False)):
            if not with_watchers:
                alone.append(pgbench.run(dsn, "validate_entry alone", swipe, clients=CLIENTS,
                                         seconds=args.seconds, rows=(EVENTS, 1)))
                continue
            watchers = Watchers(dsn)
            try:
                started = time.monotonic()
                watched.append(pgbench.run(dsn, "validate_entry, dashboard and scrapes", swipe,
                                           clients=CLIENTS, seconds=args.seconds,
                                           rows=(EVENTS, 1)))
                elapsed = time.monotonic() - started
            finally:
                watchers.close()
            check(watchers.snapshots >= int(elapsed) - 1,
                  f"the page got {watchers.snapshots} snapshots in {elapsed:.0f} s")
            check(all(status == 200 for status in watchers.scrapes),
                  f"a scrape failed: {watchers.scrapes}")

    rate_alone = median([r.tps for r in alone])
    rate_watched = median([r.tps for r in watched])
    ratios = [w.tps / a.tps for w, a in zip(watched, alone, strict=True)]
    ratio = median(ratios)
    print_table(f"validate_entry, {CLIENTS} clients, {args.cards:,} cards, durable commits",
                ["workload", "swipes/s (median, range)", "ratio to alone"],
                [["alone", spread_text([r.tps for r in alone]), ""],
                 ["dashboard open, /metrics every 5 s", spread_text([r.tps for r in watched]),
                  f"{ratio:.3f}"]])
    setup: dict[str, Any] = {"cards": args.cards, "clients": CLIENTS, "seconds": args.seconds,
                             "scrape_seconds": SCRAPE_SECONDS}
    write_json("dashboard", {
        "setup": setup, "alone": [r.tps for r in alone], "watched": [r.tps for r in watched],
        "summary": [summary_row("validate_entry with the dashboard and scrapes", "8 clients",
                                rate_watched, "swipes/s", baseline_ratio=ratio,
                                baseline="validate_entry alone", setup=setup,
                                runs=[r.tps for r in watched], target=f">= {TARGET:.2f}x",
                                met=met(ratio, TARGET))],
        "rate_alone": rate_alone,
    }, smoke=args.smoke)


if __name__ == "__main__":
    main()

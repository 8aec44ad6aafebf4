"""The bridge: forwarding rate, commit-to-consumer latency, and its cost on the hot path.

Runs in one go against one scratch database and a real broker (METRO_KAFKA, or
the project's own broker started on a free port for the run), with `metro
bridge` as a separate process, as in production:

- forwarding: a backlog of trips rows committed at once, timed from the commit
  until the cursor says Kafka acknowledged the last row (repeated);
- latency: pgbench inserts trips at 1,000 rows/s, one row per transaction; a
  consumer measures, per row, from the row's clock_timestamp() at insert (just
  before its commit) to its arrival at the consumer: an upper bound of
  commit-to-Kafka;
- hot path: validate_entry closed loop with the bridge stopped and NOTIFY off,
  then with the bridge running and NOTIFY on (and running with NOTIFY off),
  alternated in rounds in the same run. One card in ten has no money and
  notify = 1, so one swipe in ten writes a card_alert_export row and notifies.

    python -m metro.bench.bench_bridge [--rows 100000] [--repeats 3] [--seconds 10] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from metro import config

from ..app.kafka_broker import KafkaBroker, free_port_pair
from . import pgbench
from .common import print_table, scratch_database, summary_row, write_json

CARDS = 100_000
SWIPE = f"""\\set card random(1, {CARDS})
\\set station random(1, 15)
SELECT * FROM metro.validate_entry(:card, :station);
"""
TRIP = ("INSERT INTO metro.trips (card_id, entry_station, entry_ts, exit_station, exit_ts)"
        " VALUES (1, 1, clock_timestamp(), 2, clock_timestamp());\n")


@contextmanager
def broker() -> Iterator[str]:
    configured = config.kafka_bootstrap()
    if configured:
        yield configured
        return
    with tempfile.TemporaryDirectory(prefix="metro-bench-kafka-") as home:
        local = KafkaBroker(Path(home), free_port_pair())
        local.start()
        try:
            yield local.bootstrap
        finally:
            local.stop()


class BridgeProcess:
    batch_size = "5000"

    def __init__(self, dsn: str, bootstrap: str) -> None:
        env = {**os.environ, "METRO_DATABASE_URL": dsn}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "metro.app.cli", "bridge", "--kafka", bootstrap, "--no-inbound",
             "--batch-size", self.batch_size],
            env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(30)


def delivered(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT delivered FROM metro.bridge_cursors WHERE stream = 'trips'"
                       ).fetchone()
    assert row is not None
    return int(row[0])


def wait_delivered(conn: psycopg.Connection, target: int, timeout: float) -> float:
    """Seconds until the trips cursor counts target rows (polled every 5 ms)."""
    started = time.monotonic()
    while delivered(conn) < target:
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"the bridge did not deliver {target} trips within {timeout} s")
        time.sleep(0.005)
    return time.monotonic() - started


def forwarding(dsn: str, bootstrap: str, rows: int, repeats: int) -> list[float]:
    """Rows/s from one committed backlog of `rows` to the last acknowledgement, per repeat."""
    rates = []
    bridge = BridgeProcess(dsn, bootstrap)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(TRIP)  # warm-up: the bridge is connected and the topic exists
            wait_delivered(conn, 1, 60)
            for _ in range(repeats):
                target = delivered(conn) + rows
                conn.execute("INSERT INTO metro.trips (card_id, entry_station, entry_ts,"
                             " exit_station, exit_ts) SELECT n, 1, now(), 2, now()"
                             " FROM generate_series(1, %s) n", (rows,))
                rates.append(rows / wait_delivered(conn, target, 600))
    finally:
        bridge.stop()
    return rates


def latency(dsn: str, bootstrap: str, seconds: float, rate: int) -> dict[str, Any]:
    """Insert-to-consumer latency of trips rows offered at `rate` rows/s."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, fetch_max_wait_ms=50)
    tp = TopicPartition("TRIPS", 0)
    consumer.assign([tp])
    consumer.seek_to_end(tp)
    consumer.position(tp)
    samples: list[float] = []
    done = threading.Event()

    def consume() -> None:
        while not done.is_set():
            for records in consumer.poll(timeout_ms=100).values():
                arrived = time.time()
                for record in records:
                    written = datetime.fromisoformat(json.loads(record.value)["exit_ts"])
                    samples.append((arrived - written.timestamp()) * 1000)

    bridge = BridgeProcess(dsn, bootstrap)
    reader = threading.Thread(target=consume)
    reader.start()
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            wait_delivered(conn, delivered(conn), 60)
            time.sleep(2)  # the bridge is up and idle
            run = pgbench.run(dsn, f"trips insert {rate:,}/s", TRIP, clients=4,
                              seconds=seconds, rate=rate)
            time.sleep(2)
    finally:
        done.set()
        reader.join(30)
        consumer.close()
        bridge.stop()
    samples.sort()
    return {"offered_rows_per_s": rate, "achieved_rows_per_s": run.tps, "samples": len(samples),
            "p50_ms": statistics.median(samples), "p99_ms": samples[int(0.99 * len(samples))],
            "max_ms": samples[-1]}


def prepare_cards(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("""
            INSERT INTO metro.cards (card_id, enabled, card_type, balance, expires, name, phone,
                                     email, notify)
            SELECT n, true, 0, CASE WHEN n %% 10 = 0 THEN 0 ELSE 100000000 END, NULL,
                   'Rider ' || n, '555-0100', 'rider' || n || '@example.org',
                   CASE WHEN n %% 10 = 0 THEN 1 ELSE 0 END
            FROM generate_series(1, %s) n""", (CARDS,))
        conn.execute("VACUUM ANALYZE")


def set_notify(dsn: str, on: bool) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE metro.bridge_settings SET notify = %s", (on,))


def hot_path(dsn: str, bootstrap: str, seconds: float, rounds: int) -> list[pgbench.Run]:
    runs = []
    pgbench.run(dsn, "warm-up", SWIPE, clients=8, seconds=3)
    for _ in range(rounds):
        set_notify(dsn, False)
        runs.append(pgbench.run(dsn, "bridge stopped, NOTIFY off", SWIPE, clients=8,
                                seconds=seconds))
        for notify in (True, False):
            set_notify(dsn, notify)
            bridge = BridgeProcess(dsn, bootstrap)
            try:
                time.sleep(2)
                runs.append(pgbench.run(
                    dsn, f"bridge running, NOTIFY {'on' if notify else 'off'}", SWIPE,
                    clients=8, seconds=seconds))
            finally:
                bridge.stop()
    set_notify(dsn, True)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="backlog rows per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10, help="per pgbench run")
    parser.add_argument("--rounds", type=int, default=2, help="hot-path rounds")
    parser.add_argument("--rate", type=int, default=1000, help="rows/s for the latency run")
    parser.add_argument("--batch-size", default="5000", help="the bridge's --batch-size")
    args = parser.parse_args()

    BridgeProcess.batch_size = args.batch_size
    dsn = scratch_database("metro_bench_bridge")
    with broker() as bootstrap:
        print(f"broker {bootstrap}; forwarding {args.repeats} x {args.rows:,} rows ...",
              flush=True)
        rates = forwarding(dsn, bootstrap, args.rows, args.repeats)
        print(f"latency at {args.rate:,} rows/s for {args.seconds:.0f} s ...", flush=True)
        lat = latency(dsn, bootstrap, max(args.seconds, 15), args.rate)
        print(f"hot path: loading {CARDS:,} cards, {args.rounds} rounds ...", flush=True)
        prepare_cards(dsn)
        runs = hot_path(dsn, bootstrap, args.seconds, args.rounds)

    baseline = statistics.median(r.tps for r in runs if r.name.startswith("bridge stopped"))
    with_notify = statistics.median(r.tps for r in runs if r.name.endswith("NOTIFY on"))
    without_notify = statistics.median(r.tps for r in runs
                                       if r.name.endswith("running, NOTIFY off"))
    ratio = with_notify / baseline
    print_table("Bridge", ["measure", "result", "target"], [
        ["forwarding, rows/s (median of repeats)", statistics.median(rates), ">= 20,000"],
        ["forwarding, rows/s (each repeat)", " / ".join(f"{r:,.0f}" for r in rates), ""],
        [f"insert-to-consumer latency at {args.rate:,} rows/s, p50 ms", lat["p50_ms"], ""],
        [f"insert-to-consumer latency at {args.rate:,} rows/s, p99 ms", lat["p99_ms"],
         "<= 100"],
        ["validate_entry swipes/s, bridge stopped, NOTIFY off (median)", baseline, ""],
        ["validate_entry swipes/s, bridge running, NOTIFY on (median)", with_notify, ""],
        ["validate_entry swipes/s, bridge running, NOTIFY off (median)", without_notify, ""],
        ["running + NOTIFY on / stopped", f"{ratio:.1%}", ">= 90%"],
    ])
    print_table("validate_entry runs, in order", pgbench.COLUMNS, [r.row() for r in runs])
    write_json("bridge", {
        "forwarding_rows_per_s": rates,
        "backlog_rows": args.rows,
        "batch_size": int(args.batch_size),
        "latency": lat,
        "hot_path_runs": [asdict(r) for r in runs],
        "hot_path_ratio_notify_on_vs_stopped": ratio,
        "targets": {"forwarding_rows_per_s": 20000, "latency_p99_ms": 100,
                    "hot_path_ratio": 0.9},
        "summary": [
            summary_row("bridge forwarding outbox -> Kafka", f"{args.rows:,}-row backlog",
                        statistics.median(rates), "rows/s"),
            summary_row("bridge commit-to-Kafka latency", f"{args.rate:,} rows/s", args.rate,
                        "rows/s", lat["p50_ms"], lat.get("p95_ms"), lat["p99_ms"]),
            summary_row("validate_entry with the bridge running, NOTIFY on", "8 clients",
                        with_notify, "swipes/s", baseline_ratio=ratio,
                        baseline="this / bridge stopped"),
        ],
    })


if __name__ == "__main__":
    main()

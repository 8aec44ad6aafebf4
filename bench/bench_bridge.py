"""The bridge: forwarding rate, commit-to-consumer latency, and its cost on the hot path.

Runs in one go against one scratch database and a real broker (METRO_KAFKA, or
the project's own broker started on a free port for the run), with `metro
bridge` as a separate process, as in production:

Parameters, fixed before measuring (each figure's row repeats its own):
- forwarding: a backlog of 100,000 trips rows (--rows) committed at once, timed
  from the commit until the cursor says Kafka acknowledged the last row; the
  bridge's --batch-size 5000; 3 repeats (--repeats);
- the baseline: the same number of the same messages (trips rows as the bridge reads
  them, with its position header) sent by a raw kafka-python producer with the
  bridge's producer settings to a topic of their own, timed from the first send to
  the last acknowledgement; 3 repeats, after the forwarding runs; the forwarding rate
  is also given as its ratio to it, repeat by repeat;
- latency: pgbench offers 1,000 trips rows/s (--rate), one row per transaction,
  4 clients, for 15 s (at least, --seconds), 3 repeats (--repeats); a consumer
  measures, per row, from the row's clock_timestamp() at insert (just before its
  commit) to its arrival at the consumer: an upper bound of commit-to-Kafka. The
  consumer waits for every row inserted (none dropped) before the run ends;
- hot path: 100,000 cards (this benchmark's own, not the 500,000 of
  bench_validate_entry), validate_entry closed loop at 8 clients for 10 s
  (--seconds) with the bridge stopped and NOTIFY off, then with the bridge running
  and NOTIFY on, then running with NOTIFY off, in 3 rounds (--rounds); the ratio is
  taken per round. One card in ten has no money and notify = 1, so one swipe in ten
  writes a card_alert_export row and notifies.
Each figure is the median of its runs with their range; a target is met when the
median meets it.

Checks (a failed one exits non-zero): the trips cursor counts exactly the rows
committed; the consumer saw exactly one sample per trips row inserted during the
latency run; every completed swipe recorded one card event.

    python -m metro.bench.bench_bridge [--rows 100000] [--repeats 3] [--seconds 10] [--rounds 3]
                                 [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
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
from ..bridge.outbound import new_producer
from ..topics import POSITION_HEADER
from . import pgbench
from .common import (
    MIN_RUNS,
    check,
    median,
    met,
    percentile,
    print_table,
    scratch_database,
    spread,
    spread_text,
    summary_row,
    write_json,
)

CARDS = 100_000
SWIPE = """\\set card random(1, {cards})
\\set station random(1, 15)
SELECT * FROM metro.validate_entry(:card, :station);
"""
EVENTS = ("SELECT count(*) FROM metro.card_events", 1)
TRIPS = "SELECT count(*) FROM metro.trips"
SETTLE = 2.0  # seconds for a started bridge to connect and go idle (--smoke: 0.5)
TARGETS = {"forwarding_rows_per_s": 20000, "latency_p99_ms": 100, "hot_path_ratio": 0.9}
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
                time.sleep(0.2)
                check(delivered(conn) == target, f"the trips cursor counts {delivered(conn):,}"
                                                 f" rows delivered, {target:,} committed")
    finally:
        bridge.stop()
    return rates


RAW_TOPIC = "bench_raw_producer"


def raw_producer(dsn: str, bootstrap: str, rows: int, repeats: int) -> list[float]:
    """Rows/s of the baseline: the first `rows` trips messages, read as the bridge reads
    them, sent by kafka-python alone; from the first send to the last acknowledgement."""
    with psycopg.connect(dsn) as conn:
        messages = [(key.encode(), value.encode(), str(position).encode())
                    for position, key, value in conn.execute(
                        "SELECT row_position, key, value"
                        " FROM metro.bridge_batch('trips', '0'::xid8, 0, %s)", (rows,))]
    check(len(messages) == rows, f"read {len(messages):,} trips messages, expected {rows:,}")
    rates = []
    for _ in range(repeats):
        producer = new_producer(bootstrap)
        try:
            producer.partitions_for(RAW_TOPIC)  # the topic and its metadata, before the clock
            started = time.perf_counter()
            futures = [producer.send(RAW_TOPIC, key=key, value=value, partition=0,
                                     headers=[(POSITION_HEADER, header)])
                       for key, value, header in messages]
            producer.flush()
            seconds = time.perf_counter() - started
        finally:
            producer.close()
        check(all(future.succeeded() for future in futures),
              "Kafka did not acknowledge every message of the raw producer")
        rates.append(rows / seconds)
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
            time.sleep(SETTLE)  # the bridge is up and idle
            before = conn.execute(TRIPS).fetchone()
            run = pgbench.run(dsn, f"trips insert {rate:,}/s", TRIP, clients=4,
                              seconds=seconds, rate=rate, rows=(TRIPS, 1))
            after = conn.execute(TRIPS).fetchone()
            assert before is not None and after is not None
            inserted = after[0] - before[0]
            deadline = time.monotonic() + 60
            while len(samples) < inserted and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        done.set()
        reader.join(30)
        consumer.close()
        bridge.stop()
    check(len(samples) == inserted, f"the consumer saw {len(samples):,} trips rows of the"
                                    f" {inserted:,} inserted during the latency run")
    samples.sort()
    return {"offered_rows_per_s": rate, "achieved_rows_per_s": run.tps, "inserted": inserted,
            "samples": len(samples), "p50_ms": percentile(samples, 0.50),
            "p95_ms": percentile(samples, 0.95), "p99_ms": percentile(samples, 0.99),
            "max_ms": samples[-1] if samples else float("nan")}


def prepare_cards(dsn: str, cards: int = CARDS) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("""
            INSERT INTO metro.cards (card_id, enabled, card_type, balance, expires, name, phone,
                                     email, notify)
            SELECT n, true, 0, CASE WHEN n %% 10 = 0 THEN 0 ELSE 100000000 END, NULL,
                   'Rider ' || n, '555-0100', 'rider' || n || '@example.org',
                   CASE WHEN n %% 10 = 0 THEN 1 ELSE 0 END
            FROM generate_series(1, %s) n""", (cards,))
        conn.execute("VACUUM ANALYZE")


def set_notify(dsn: str, on: bool) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE metro.bridge_settings SET notify = %s", (on,))


def hot_path(dsn: str, bootstrap: str, seconds: float, rounds: int,
             cards: int = CARDS) -> list[pgbench.Run]:
    runs = []
    swipe = SWIPE.format(cards=cards)
    if SETTLE >= 2:
        pgbench.run(dsn, "warm-up", swipe, clients=8, seconds=3)
    for _ in range(rounds):
        set_notify(dsn, False)
        runs.append(pgbench.run(dsn, "bridge stopped, NOTIFY off", swipe, clients=8,
                                seconds=seconds, rows=EVENTS))
        for notify in (True, False):
            set_notify(dsn, notify)
            bridge = BridgeProcess(dsn, bootstrap)
            try:
                time.sleep(SETTLE)
                runs.append(pgbench.run(
                    dsn, f"bridge running, NOTIFY {'on' if notify else 'off'}", swipe,
                    clients=8, seconds=seconds, rows=EVENTS))
            finally:
                bridge.stop()
    set_notify(dsn, True)
    return runs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="backlog rows per repeat")
    parser.add_argument("--repeats", type=int, default=MIN_RUNS,
                        help="forwarding and latency runs")
    parser.add_argument("--seconds", type=float, default=10, help="per pgbench run")
    parser.add_argument("--rounds", type=int, default=MIN_RUNS, help="hot-path rounds")
    parser.add_argument("--rate", type=int, default=1000, help="rows/s for the latency run")
    parser.add_argument("--batch-size", default="5000", help="the bridge's --batch-size")
    parser.add_argument("--cards", type=int, default=CARDS, help="cards of the hot-path runs")
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny run that proves the benchmark works (no figures)")
    args = parser.parse_args(argv)
    latency_seconds = max(args.seconds, 15)
    if args.smoke:
        args.rows, args.repeats, args.seconds, args.rounds = 2_000, 1, 1, 1
        args.rate, args.cards, latency_seconds = 200, 2_000, 1
        global SETTLE
        SETTLE = 0.5
        pgbench.smoke_size()

    BridgeProcess.batch_size = args.batch_size
    dsn = scratch_database("metro_bench_bridge", smoke=args.smoke)
    with broker() as bootstrap:
        print(f"broker {bootstrap}; forwarding {args.repeats} x {args.rows:,} rows ...",
              flush=True)
        rates = forwarding(dsn, bootstrap, args.rows, args.repeats)
        raw_rates = raw_producer(dsn, bootstrap, args.rows, args.repeats)
        print(f"latency at {args.rate:,} rows/s for {latency_seconds:.0f} s, {args.repeats}"
              " times ...", flush=True)
        lats = [latency(dsn, bootstrap, latency_seconds, args.rate)
                for _ in range(args.repeats)]
        print(f"hot path: loading {args.cards:,} cards, {args.rounds} rounds ...", flush=True)
        prepare_cards(dsn, args.cards)
        runs = hot_path(dsn, bootstrap, args.seconds, args.rounds, args.cards)

    stopped = [r for r in runs if r.name.startswith("bridge stopped")]
    notify_on = [r for r in runs if r.name.endswith("NOTIFY on")]
    notify_off = [r for r in runs if r.name.endswith("running, NOTIFY off")]
    ratios = [on.tps / off.tps for on, off in zip(notify_on, stopped, strict=True)]
    ratios_off = [on.tps / off.tps for on, off in zip(notify_off, stopped, strict=True)]
    ratio = median(ratios)
    forwarding_rate = median(rates)
    raw_ratios = [bridge / raw for bridge, raw in zip(rates, raw_rates, strict=True)]
    p50s, p99s = [lat["p50_ms"] for lat in lats], [lat["p99_ms"] for lat in lats]
    p99 = median(p99s)
    print_table("Bridge (median of the runs, range in brackets)", ["measure", "result",
                                                                    "target", "met"], [
        [f"forwarding, rows/s ({args.rows:,}-row backlog, batch {args.batch_size})",
         spread_text(rates), ">= 20,000",
         "yes" if met(forwarding_rate, TARGETS["forwarding_rows_per_s"]) else "no"],
        [f"raw kafka-python producer, rows/s (the same {args.rows:,} messages)",
         spread_text(raw_rates), "", ""],
        ["forwarding / raw producer, per repeat", spread_text(raw_ratios), "", ""],
        [f"insert-to-consumer latency at {args.rate:,} rows/s, p50 ms", spread_text(p50s),
         "", ""],
        [f"insert-to-consumer latency at {args.rate:,} rows/s, p99 ms", spread_text(p99s),
         "<= 100", "yes" if met(p99, TARGETS["latency_p99_ms"], False) else "no"],
        ["validate_entry swipes/s, bridge stopped, NOTIFY off",
         spread_text([r.tps for r in stopped]), "", ""],
        ["validate_entry swipes/s, bridge running, NOTIFY on",
         spread_text([r.tps for r in notify_on]), "", ""],
        ["validate_entry swipes/s, bridge running, NOTIFY off",
         spread_text([r.tps for r in notify_off]), "", ""],
        ["running + NOTIFY on / stopped, per round", spread_text(ratios), ">= 0.90",
         "yes" if met(ratio, TARGETS["hot_path_ratio"]) else "no"],
        ["running + NOTIFY off / stopped, per round", spread_text(ratios_off), "", ""],
    ])
    print_table("validate_entry runs, in order", pgbench.COLUMNS, [r.row() for r in runs])
    hot_setup = {"cards": args.cards, "clients": 8, "seconds": max(1, int(args.seconds)),
                 "runs": args.rounds}
    write_json("bridge", {
        "forwarding_rows_per_s": spread(rates),
        "raw_producer_rows_per_s": spread(raw_rates),
        "forwarding_vs_raw_producer": spread(raw_ratios),
        "backlog_rows": args.rows,
        "batch_size": int(args.batch_size),
        "latency": {"runs": lats, "p50_ms": spread(p50s), "p99_ms": spread(p99s),
                    "seconds": max(1, int(latency_seconds)), "clients": 4},
        "hot_path_runs": [asdict(r) for r in runs],
        "hot_path_ratio_notify_on_vs_stopped": spread(ratios),
        "hot_path_ratio_notify_off_vs_stopped": spread(ratios_off),
        "cards": args.cards,
        "targets": TARGETS,
        "summary": [
            summary_row("raw kafka-python producer, the same messages",
                        f"{args.rows:,} messages", median(raw_rates), "rows/s",
                        setup={"messages": args.rows, "runs": args.repeats}, runs=raw_rates),
            summary_row("bridge forwarding outbox -> Kafka", f"{args.rows:,}-row backlog",
                        forwarding_rate, "rows/s", baseline_ratio=median(raw_ratios),
                        baseline="this / raw producer, per repeat",
                        setup={"backlog_rows": args.rows, "batch_size": int(args.batch_size),
                               "runs": args.repeats},
                        runs=rates, target=">= 20,000 rows/s",
                        met=met(forwarding_rate, TARGETS["forwarding_rows_per_s"])),
            summary_row("bridge commit-to-Kafka latency", f"{args.rate:,} rows/s offered",
                        median([lat["achieved_rows_per_s"] for lat in lats]), "rows/s",
                        median(p50s), median([lat["p95_ms"] for lat in lats]), p99,
                        setup={"offered_per_s": args.rate, "clients": 4,
                               "seconds": max(1, int(latency_seconds)), "runs": args.repeats},
                        runs=[lat["achieved_rows_per_s"] for lat in lats],
                        target="p99 <= 100 ms", met=met(p99, TARGETS["latency_p99_ms"], False)),
            summary_row("validate_entry with the bridge running, NOTIFY on", "8 clients",
                        median([r.tps for r in notify_on]), "swipes/s", baseline_ratio=ratio,
                        baseline="this / bridge stopped, per round", setup=hot_setup,
                        runs=[r.tps for r in notify_on], target="ratio >= 0.90",
                        met=met(ratio, TARGETS["hot_path_ratio"])),
        ],
    }, smoke=args.smoke)


if __name__ == "__main__":
    main()

"""Payment risk decisions per second end to end through Kafka: stored rules against the
usual build, on the same messages, in the same run.

- stored: `metro bridge` consumes transaction_topic into evaluate_transaction (tags and
  rules in PostgreSQL; the decision recorded once per transaction_id, its offset stored
  in the same transaction) and forwards the decisions outbox to transaction_decisions.
- usual: a Python consumer process reads the same messages from its own topic with
  the same batching as the bridge (a poll of up to 1,000 messages), and per poll, in
  one transaction: looks up the tags of the poll's accounts with one SELECT, evaluates
  the same rules in Python (read once from risk_rules at start), records each decision
  (bench_python.decisions, once per transaction_id) and the consumed offset
  (bench_python.offsets); after the commit it publishes the poll's decisions. The
  same durable writes as the stored path, minus the outbox.

Parameters, fixed before measuring: 10,000 accounts (three in four tagged, levels 1-3),
20,000 payments per repeat (--payments) with the amounts of `producers payments`,
3 repeats (--repeats), one partition per topic. Each repeat publishes the same
payments to each path in turn, alternating which goes first, and times from the first
send to the N-th decision read back. Both consumers run (idle) for the whole run. The
figures are the medians of the repeats with their range; the ratio is taken per repeat.

Checks (a failed one exits non-zero): the two paths' decisions read back from Kafka
agree message by message, and so do the decisions each path recorded in PostgreSQL;
each path recorded exactly one decision per payment; the usual path's stored offset
is the end of its topic.

    python -m metro.bench.bench_risk [--payments 20000] [--repeats 3] [--smoke]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from metro.topics import INBOUND_TOPICS, PAYMENT_TOPIC

from ..producers.events import Payment
from ..producers.kafka_sink import encode_payment
from ..producers.payments import Payments
from .bench_bridge import broker
from .common import (
    MIN_RUNS,
    check,
    median,
    print_table,
    scratch_database,
    spread,
    spread_text,
    summary_row,
    write_json,
)

ACCOUNTS = 10_000
DECISIONS_TOPIC = "transaction_decisions"
PYTHON_IN, PYTHON_OUT = "bench_risk_payments", "bench_risk_decisions"
WARM_UP = 500
POLL = 1000  # messages per poll, as the bridge
PYTHON_TABLES = """
CREATE SCHEMA bench_python;
CREATE TABLE bench_python.decisions (
    transaction_id text PRIMARY KEY, account_id text NOT NULL, amount numeric NOT NULL,
    ts timestamptz NOT NULL, risk_level smallint NOT NULL, blocked boolean NOT NULL,
    rule text NOT NULL, message text NOT NULL, decided_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE bench_python.offsets (
    topic text, kafka_partition integer, next_offset bigint NOT NULL,
    PRIMARY KEY (topic, kafka_partition));
"""
RECORD = """
INSERT INTO bench_python.decisions (transaction_id, account_id, amount, ts, risk_level,
                                    blocked, rule, message)
SELECT * FROM unnest(%s::text[], %s::text[], %s::numeric[], %s::timestamptz[],
                     %s::smallint[], %s::boolean[], %s::text[], %s::text[])
ON CONFLICT (transaction_id) DO NOTHING"""
STORE_OFFSET = """
INSERT INTO bench_python.offsets VALUES (%s, %s, %s)
ON CONFLICT (topic, kafka_partition) DO UPDATE SET next_offset = excluded.next_offset"""


@dataclass(frozen=True)
class Rule:
    name: str
    low: Decimal | None
    low_inclusive: bool
    high: Decimal | None
    high_inclusive: bool
    min_level: int
    block: bool
    reason: str

    def matches(self, amount: Decimal, level: int) -> bool:
        if level < self.min_level:
            return False
        if self.low is not None and (amount < self.low or
                                     (amount == self.low and not self.low_inclusive)):
            return False
        return self.high is None or amount < self.high or (
            amount == self.high and self.high_inclusive)


def load_rules(conn: psycopg.Connection) -> list[Rule]:
    rows = conn.execute(
        "SELECT rule, lower(amount_range), lower_inc(amount_range), upper(amount_range),"
        " upper_inc(amount_range), min_risk_level, action = 'block', reason"
        " FROM metro.risk_rules ORDER BY rule_order").fetchall()
    return [Rule(*row) for row in rows]


def python_consumer(dsn: str, bootstrap: str, start: str) -> None:
    """The usual build: consume a poll, SELECT the poll's tags, evaluate in Python, record
    the decisions and the offset in one transaction, then publish the decisions."""
    conn = psycopg.connect(dsn)
    rules = load_rules(conn)
    conn.commit()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, max_poll_records=POLL,
                             fetch_max_wait_ms=200)
    partition = TopicPartition(PYTHON_IN, 0)
    consumer.assign([partition])
    stored = conn.execute("SELECT next_offset FROM bench_python.offsets WHERE topic = %s AND"
                          " kafka_partition = 0", (PYTHON_IN,)).fetchone()
    conn.commit()
    consumer.seek(partition, stored[0] if stored else int(start))
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                             linger_ms=5)
    stop = False

    def request_stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, request_stop)
    tags = "SELECT account_id, risk_level FROM metro.risk_tags WHERE account_id = ANY(%s)"
    while not stop:
        for records in consumer.poll(timeout_ms=200).values():
            payments = [json.loads(record.value, parse_float=Decimal) for record in records]
            for payment in payments:  # account ids are text, as metro.risk_tags holds them
                payment["account_id"] = str(payment["account_id"])
            decisions = []
            with conn.transaction():
                accounts = sorted({p["account_id"] for p in payments})
                levels: dict[str, int] = dict(conn.execute(tags, (accounts,)).fetchall())
                for payment in payments:
                    amount = Decimal(payment["amount"])
                    level = levels.get(payment["account_id"], 1)
                    rule = next(r for r in rules if r.matches(amount, level))
                    decisions.append((str(payment["transaction_id"]), payment["account_id"],
                                      amount, datetime.fromisoformat(payment["timestamp"]),
                                      level, rule.block, rule.name, rule.reason))
                conn.execute(RECORD, [list(column) for column in zip(*decisions, strict=True)])
                conn.execute(STORE_OFFSET, (PYTHON_IN, 0, records[-1].offset + 1))
            for transaction_id, account_id, amount, _, level, block, name, reason in decisions:
                value = {"transaction_id": transaction_id, "account_id": account_id,
                         "amount": str(amount), "risk_level": level, "blocked": block,
                         "rule": name, "message": reason}
                producer.send(PYTHON_OUT, key=transaction_id.encode(),
                              value=json.dumps(value).encode())
    producer.close(10)
    consumer.close()
    conn.close()


def create_topics(bootstrap: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        for name in (PAYMENT_TOPIC, DECISIONS_TOPIC, PYTHON_IN, PYTHON_OUT):
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics([NewTopic(name, 1, 1)])
    finally:
        admin.close()


def end_offsets(bootstrap: str, topics: tuple[str, ...]) -> dict[TopicPartition, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        partitions = [TopicPartition(t, p) for t in topics
                      for p in consumer.partitions_for_topic(t) or ()]
        return consumer.end_offsets(partitions) if partitions else {}
    finally:
        consumer.close()


def prepare(dsn: str, bootstrap: str) -> None:
    """Tags for every account (a third of them untagged) and the bridge past old messages."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(PYTHON_TABLES)
        conn.execute("INSERT INTO metro.risk_tags SELECT n, 1 + n %% 3 FROM"
                     " generate_series(1, %s) n WHERE n %% 4 <> 0", (ACCOUNTS,))
        for tp, offset in end_offsets(bootstrap, INBOUND_TOPICS).items():
            conn.execute("INSERT INTO metro.bridge_inbound_offsets (topic, kafka_partition,"
                         " next_offset) VALUES (%s, %s, %s)", (tp.topic, tp.partition, offset))


def payments(count: int, run: str, seed: int) -> list[tuple[str, bytes, bytes]]:
    """(transaction_id, key, JSON value) of count payments with the amounts of
    `producers payments`."""
    simulation = Payments(rate=1000, accounts=ACCOUNTS, start_ts=datetime.now(UTC),
                          horizon=0, rng=random.Random(seed))
    ts = datetime(2026, 11, 2, 8, tzinfo=UTC)
    result = []
    for n in range(count):
        payment = Payment(0, ts + timedelta(milliseconds=n), f"{run}-{n}",
                          simulation.rng.randint(1, ACCOUNTS), simulation.amount())
        result.append((payment.transaction_id, str(payment.account_id).encode(),
                       encode_payment(payment, "json").encode()))
    return result


class DecisionReader:
    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                      enable_auto_commit=False, fetch_max_wait_ms=50)
        partitions = [TopicPartition(topic, p)
                      for p in sorted(self.consumer.partitions_for_topic(topic))]
        self.consumer.assign(partitions)
        self.consumer.seek_to_end()
        for tp in partitions:
            self.consumer.position(tp)

    def read(self, wanted: set[str], timeout: float) -> dict[str, bool]:
        """blocked per transaction_id, once every wanted one arrived (first copy wins)."""
        found: dict[str, bool] = {}
        deadline = time.monotonic() + timeout
        while len(found) < len(wanted):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(found)} of {len(wanted)} decisions within {timeout} s")
            for records in self.consumer.poll(timeout_ms=100).values():
                for record in records:
                    value = json.loads(record.value)
                    if value["transaction_id"] in wanted:
                        found.setdefault(value["transaction_id"], value["blocked"])
        return found


def run_path(producer: KafkaProducer, reader: DecisionReader, topic: str,
             batch: list[tuple[str, bytes, bytes]]) -> tuple[float, dict[str, bool]]:
    """Decisions per second from the first send to the last decision read back."""
    started = time.monotonic()
    for _, key, value in batch:
        producer.send(topic, key=key, value=value)
    producer.flush()
    found = reader.read({t for t, _, _ in batch}, 600)
    return len(batch) / (time.monotonic() - started), found


@contextlib.contextmanager
def process(*args: str, dsn: str) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "METRO_DATABASE_URL": dsn}
    proc = subprocess.Popen([sys.executable, *args], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--payments", type=int, default=20_000, help="payments per repeat")
    parser.add_argument("--repeats", type=int, default=MIN_RUNS)
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny run that proves the benchmark works (no figures)")
    parser.add_argument("--python-consumer", nargs=3, metavar=("DSN", "BOOTSTRAP", "OFFSET"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.python_consumer:
        python_consumer(*args.python_consumer)
        return
    warm_up = WARM_UP
    if args.smoke:
        args.payments, args.repeats, warm_up = 300, 1, 50

    dsn = scratch_database("metro_bench_risk", smoke=args.smoke)
    results: dict[str, list[float]] = {"stored": [], "python": []}
    mismatches = 0
    with broker() as bootstrap:
        create_topics(bootstrap)
        prepare(dsn, bootstrap)
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                 batch_size=512 * 1024)
        stored_reader = DecisionReader(bootstrap, DECISIONS_TOPIC)
        python_reader = DecisionReader(bootstrap, PYTHON_OUT)
        paths = {"stored": (PAYMENT_TOPIC, stored_reader), "python": (PYTHON_IN, python_reader)}
        with process("-m", "metro.app.cli", "bridge", "--kafka", bootstrap, dsn=dsn), \
                process("-m", "metro.bench.bench_risk", "--python-consumer", dsn, bootstrap,
                        str(end_offsets(bootstrap, (PYTHON_IN,))[TopicPartition(PYTHON_IN, 0)]),
                        dsn=dsn):
            print(f"broker {bootstrap}; warming up both paths ...", flush=True)
            warm = payments(warm_up, "warm", 0)
            for topic, reader in paths.values():
                run_path(producer, reader, topic, warm)
            for repeat in range(args.repeats):
                batch = payments(args.payments, f"r{repeat}", repeat + 1)
                order = ["stored", "python"] if repeat % 2 == 0 else ["python", "stored"]
                found = {}
                for name in order:
                    topic, reader = paths[name]
                    rate, found[name] = run_path(producer, reader, topic, batch)
                    results[name].append(rate)
                    print(f"repeat {repeat + 1}: {name} {rate:,.0f} decisions/s", flush=True)
                mismatches += sum(found["stored"][t] != found["python"][t] for t in found["stored"])
        producer.close()
        python_end = end_offsets(bootstrap, (PYTHON_IN,))[TopicPartition(PYTHON_IN, 0)]

    expected = warm_up + args.repeats * args.payments
    with psycopg.connect(dsn) as conn:
        recorded = conn.execute("SELECT count(*), count(*) FILTER (WHERE blocked)"
                                " FROM metro.risk_decisions").fetchone()
        python_recorded = conn.execute("SELECT count(*) FROM bench_python.decisions").fetchone()
        differ = conn.execute(
            "SELECT count(*) FROM metro.risk_decisions s FULL JOIN bench_python.decisions p"
            " USING (transaction_id) WHERE s.transaction_id IS NULL OR p.transaction_id IS NULL"
            " OR (s.account_id, s.amount, s.ts, s.risk_level, s.blocked, s.rule, s.message)"
            " IS DISTINCT FROM (p.account_id, p.amount, p.ts, p.risk_level, p.blocked, p.rule,"
            " p.message)").fetchone()
        python_offset = conn.execute("SELECT next_offset FROM bench_python.offsets").fetchone()
    assert recorded is not None and python_recorded is not None and differ is not None
    stored_rates, python_rates = results["stored"], results["python"]
    ratios = [a / b for a, b in zip(stored_rates, python_rates, strict=True)]
    stored, python, ratio = median(stored_rates), median(python_rates), median(ratios)
    print_table(f"Payment risk decisions end to end through Kafka ({args.repeats} x"
                f" {args.payments:,} payments, {ACCOUNTS:,} accounts; median, range)",
                ["path", "decisions/s (range)"], [
        ["stored: bridge -> evaluate_transactions -> outbox -> Kafka",
         spread_text(stored_rates)],
        ["usual: Python consumer, one tag SELECT per poll, rules in Python, decisions and"
         " offset recorded per poll", spread_text(python_rates)],
        ["ratio stored / usual, per repeat", spread_text(ratios)],
    ])
    print(f"decisions that differ between the paths: {mismatches} read back from Kafka,"
          f" {differ[0]} recorded; recorded in risk_decisions: {recorded[0]:,}"
          f" ({recorded[1]:,} blocked), in bench_python.decisions: {python_recorded[0]:,}")
    check(mismatches == 0, f"{mismatches} decisions read back differ between the paths")
    check(differ[0] == 0, f"{differ[0]} recorded decisions differ between the paths")
    check(recorded[0] == expected, f"risk_decisions holds {recorded[0]:,} decisions,"
                                   f" {expected:,} payments were sent")
    check(python_recorded[0] == expected, f"bench_python.decisions holds"
                                          f" {python_recorded[0]:,}, {expected:,} were sent")
    check(python_offset == (python_end,), f"the usual path stored offset {python_offset},"
                                          f" its topic ends at {python_end}")
    setup = {"accounts": ACCOUNTS, "payments": args.payments, "poll": POLL,
             "runs": args.repeats, "partitions": 1}
    write_json("risk", {
        "payments_per_repeat": args.payments, "repeats": args.repeats, "accounts": ACCOUNTS,
        "stored_decisions_per_s": spread(stored_rates),
        "python_decisions_per_s": spread(python_rates),
        "ratio_stored_vs_python": spread(ratios), "mismatched_decisions": mismatches,
        "mismatched_records": differ[0], "recorded_decisions": recorded[0],
        "blocked": recorded[1],
        "summary": [
            summary_row("payments through Kafka: stored rules", "evaluate_transactions per"
                        " poll, decisions through the outbox", stored, "decisions/s",
                        setup=setup, runs=stored_rates, baseline_ratio=ratio,
                        baseline="this / the usual Python consumer, per repeat"),
            summary_row("payments through Kafka: usual Python consumer", "one tag SELECT,"
                        " decisions and offset recorded per poll", python, "decisions/s",
                        setup=setup, runs=python_rates),
        ],
    }, smoke=args.smoke)


if __name__ == "__main__":
    main()

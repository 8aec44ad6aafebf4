"""Payment risk decisions per second end to end through Kafka: stored rules against the
usual build, on the same messages, in the same run.

- stored: `metro bridge` consumes transaction_topic into evaluate_transaction (tags and
  rules in PostgreSQL; the decision recorded once per transaction_id, its offset stored
  in the same transaction) and forwards the decisions outbox to transaction_decisions.
- usual: a Python consumer process reads the same messages from its own topic, looks up
  the account's tag with one SELECT per message against risk_tags, evaluates the same
  rules in Python (read once from risk_rules at start) and publishes each decision. It
  records nothing and keeps no offsets of its own in PostgreSQL.

Each repeat publishes the same N payments (accounts 1..ACCOUNTS with tags of every
level, amounts around the rule boundaries) to each path in turn, alternating which goes
first, and times from the first send to the N-th decision read back. Both consumers run
(idle) for the whole run; the two paths' decisions are compared message by message.

    python -m metro.bench.bench_risk [--payments 20000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import statistics
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
from .common import print_table, scratch_database, write_json

ACCOUNTS = 10_000
DECISIONS_TOPIC = "transaction_decisions"
PYTHON_IN, PYTHON_OUT = "bench_risk_payments", "bench_risk_decisions"
WARM_UP = 500


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
    """The usual build: consume, SELECT the tag, evaluate in Python, publish the decision."""
    conn = psycopg.connect(dsn, autocommit=True)
    rules = load_rules(conn)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, max_poll_records=1000,
                             fetch_max_wait_ms=200)
    partition = TopicPartition(PYTHON_IN, 0)
    consumer.assign([partition])
    consumer.seek(partition, int(start))
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                             linger_ms=5)
    stop = False

    def request_stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, request_stop)
    tag = "SELECT risk_level FROM metro.risk_tags WHERE account_id = %s"
    while not stop:
        for records in consumer.poll(timeout_ms=200).values():
            for record in records:
                payment = json.loads(record.value, parse_float=Decimal)
                amount = Decimal(payment["amount"])
                row = conn.execute(tag, (payment["account_id"],)).fetchone()
                level = row[0] if row else 1
                rule = next(r for r in rules if r.matches(amount, level))
                decision = {"transaction_id": payment["transaction_id"],
                            "account_id": payment["account_id"], "amount": str(amount),
                            "risk_level": level, "blocked": rule.block, "rule": rule.name,
                            "message": rule.reason}
                producer.send(PYTHON_OUT, key=str(payment["transaction_id"]).encode(),
                              value=json.dumps(decision).encode())
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--payments", type=int, default=20_000, help="payments per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--python-consumer", nargs=3, metavar=("DSN", "BOOTSTRAP", "OFFSET"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.python_consumer:
        python_consumer(*args.python_consumer)
        return

    dsn = scratch_database("metro_bench_risk")
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
            warm = payments(WARM_UP, "warm", 0)
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

    stored, python = statistics.median(results["stored"]), statistics.median(results["python"])
    with psycopg.connect(dsn) as conn:
        recorded = conn.execute("SELECT count(*), count(*) FILTER (WHERE blocked)"
                                " FROM metro.risk_decisions").fetchone()
    assert recorded is not None
    print_table("Payment risk decisions end to end through Kafka", ["path", "decisions/s "
                "(median)", "each repeat"], [
        ["stored: bridge -> evaluate_transactions -> outbox -> Kafka", stored,
         " / ".join(f"{r:,.0f}" for r in results["stored"])],
        ["usual: Python consumer, SELECT tag per message, rules in Python", python,
         " / ".join(f"{r:,.0f}" for r in results["python"])],
        ["ratio stored / usual", f"{stored / python:.2f}", ""],
    ])
    print(f"{args.repeats} x {args.payments:,} payments; decisions that differ between the "
          f"paths: {mismatches}; recorded in risk_decisions: {recorded[0]:,} "
          f"({recorded[1]:,} blocked)")
    write_json("risk", {
        "payments_per_repeat": args.payments, "repeats": args.repeats, "accounts": ACCOUNTS,
        "stored_decisions_per_s": results["stored"], "python_decisions_per_s": results["python"],
        "ratio_stored_vs_python": stored / python, "mismatched_decisions": mismatches,
        "recorded_decisions": recorded[0], "blocked": recorded[1],
    })


if __name__ == "__main__":
    main()

"""A real Kafka broker for the session (the project's own `metro kafka` broker), readers
of its topics and bridges running as real processes.

The broker listens on a free localhost port with its state in a temporary
directory; its jars are fetched once into the usual cache (METRO_KAFKA_CACHE).
Tests share the broker, so readers start at the topics' current end and
bridges are told to skip what earlier tests left on the inbound topics.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from metro.app.kafka_broker import KafkaBroker, free_port_pair

PROJECT_ROOT = Path(__file__).resolve().parent.parent


# RECHARGE has two partitions, so inbound offsets are kept per partition.
TOPIC_PARTITIONS = {"FRAUD": 1, "CARD_ALERT_EXPORT": 1, "TRIPS": 1, "TRAINTOPIC": 1,
                    "RECHARGE": 2}


def create_topics(bootstrap: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(name, partitions, 1)
                             for name, partitions in TOPIC_PARTITIONS.items()])
    finally:
        admin.close()


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka-home"), free_port_pair())
    broker.start()
    create_topics(broker.bootstrap)
    yield broker
    broker.stop()


@pytest.fixture
def kafka(kafka_broker: KafkaBroker) -> str:
    """Bootstrap address of the session broker, started again if a test stopped it."""
    if not kafka_broker.running():
        kafka_broker.start()
    return kafka_broker.bootstrap


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll condition until it returns something truthy; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


class TopicReader:
    """Reads what arrives on a topic after the reader was created.

    The consuming client connects on the first read: a client left connected while a
    test stops the broker would leak a socket per refused reconnection.
    """

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        probe = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
        try:
            partitions = probe.partitions_for_topic(topic) or {0}
            self.partitions = [TopicPartition(topic, p) for p in sorted(partitions)]
            self.start = probe.end_offsets(self.partitions)
        finally:
            probe.close()
        self._consumer: KafkaConsumer | None = None
        self.records: list[Any] = []

    @property
    def consumer(self) -> KafkaConsumer:
        if self._consumer is None:
            self._consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None,
                                           enable_auto_commit=False)
            self._consumer.assign(self.partitions)
            for tp, offset in self.start.items():
                self._consumer.seek(tp, offset)
        return self._consumer

    def read(self, count: int, timeout: float = 60) -> list[Any]:
        """The first count records after the start (or fail), in arrival order per partition."""
        deadline = time.monotonic() + timeout
        while len(self.records) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.topic}: {len(self.records)} of {count} records "
                                     f"arrived within {timeout:.0f} s")
            for batch in self.consumer.poll(timeout_ms=500).values():
                self.records.extend(batch)
        return self.records[:count]

    def read_idle(self, idle: float = 1.0) -> list[Any]:
        """Everything that arrived, once nothing more came for idle seconds."""
        while True:
            batches = self.consumer.poll(timeout_ms=int(idle * 1000))
            if not batches:
                return self.records
            for batch in batches.values():
                self.records.extend(batch)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()


@pytest.fixture
def topic_reader(kafka: str) -> Iterator[Callable[[str], TopicReader]]:
    readers: list[TopicReader] = []

    def make(topic: str) -> TopicReader:
        reader = TopicReader(kafka, topic)
        readers.append(reader)
        return reader

    yield make
    for reader in readers:
        reader.close()


@pytest.fixture
def kafka_producer(kafka: str) -> Iterator[KafkaProducer]:
    producer = KafkaProducer(bootstrap_servers=kafka, acks="all")
    yield producer
    producer.close()


def skip_inbound_backlog(dsn: str, bootstrap: str) -> None:
    """Store the inbound topics' current end offsets, so a bridge on dsn starts after them."""
    from metro.topics import INBOUND_TOPICS

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        partitions = [TopicPartition(topic, p) for topic in INBOUND_TOPICS
                      for p in consumer.partitions_for_topic(topic) or ()]
        ends = consumer.end_offsets(partitions) if partitions else {}
    finally:
        consumer.close()
    with psycopg.connect(dsn, autocommit=True) as conn:
        for tp, offset in ends.items():
            conn.execute("INSERT INTO metro.bridge_inbound_offsets (topic, kafka_partition,"
                         " next_offset) VALUES (%s, %s, %s)", (tp.topic, tp.partition, offset))


class BridgeProcess:
    """`metro bridge` as a real process; its stderr goes to a file the test can read."""

    def __init__(self, dsn: str, bootstrap: str, log: Path, *args: str,
                 extra_env: dict[str, str] | None = None) -> None:
        self.log = log
        env = {**os.environ, "METRO_DATABASE_URL": dsn, "PYTHONUNBUFFERED": "1"}
        env.pop("METRO_KAFKA", None)
        env.pop("METRO_KAFKA_CONFIG", None)
        env.update(extra_env or {})
        with open(log, "ab") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "metro.app.cli", "bridge", "--kafka", bootstrap, *args],
                cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=output,
                stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text()

    def wait_for_output(self, text: str, timeout: float = 30) -> None:
        wait_until(lambda: text in self.output() or self.process.poll() is not None, timeout,
                   f"bridge output {text!r}")
        assert text in self.output(), self.output()

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM and wait: a clean stop returns 0."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)


@pytest.fixture
def start_bridge(kafka: str, tmp_path: Path) -> Iterator[Callable[..., BridgeProcess]]:
    """Start bridges on a database (catching up from its cursors); all are stopped afterwards."""
    bridges: list[BridgeProcess] = []

    def start(dsn: str, *args: str, bootstrap: str | None = None) -> BridgeProcess:
        bridge = BridgeProcess(dsn, bootstrap or kafka, tmp_path / f"bridge-{len(bridges)}.log",
                               "--poll-interval", "0.5", *args)
        bridges.append(bridge)
        return bridge

    yield start
    for bridge in bridges:
        if bridge.process.poll() is None:
            bridge.kill()


# transaction_topic has two partitions, so its offsets are kept per partition too.
PAYMENT_TOPIC_PARTITIONS = 2


@pytest.fixture
def payment_topic(kafka: str) -> str:
    """The session broker with transaction_topic created (two partitions); its bootstrap."""
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=kafka)
    try:
        admin.create_topics([NewTopic("transaction_topic", PAYMENT_TOPIC_PARTITIONS, 1)])
    except TopicAlreadyExistsError:
        pass
    finally:
        admin.close()
    return kafka


def group_offsets(bootstrap: str, group: str) -> dict[tuple[str, int], int]:
    """The offsets committed to a consumer group, per (topic, partition)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets({group: None}).get(group, {})
    finally:
        admin.close()
    return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()
            if meta.offset >= 0}


def stored_offsets(dsn: str) -> dict[tuple[str, int], int]:
    """The inbound offsets PostgreSQL holds, per (topic, partition)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT topic, kafka_partition, next_offset"
                            " FROM metro.bridge_inbound_offsets").fetchall()
    return {(topic, partition): offset for topic, partition, offset in rows}


# A broker whose client listener asks for SASL PLAIN: the first user is the broker's own
# login (and the tests' admin), the second the one metro's clients log in as.
SASL_USERS = {"admin": "admin-secret", "metro": "metro-secret"}
SASL_TOPICS = {**TOPIC_PARTITIONS, "transaction_topic": 1, "transaction_decisions": 1}


def start_sasl_broker(home: Path) -> KafkaBroker:
    """A second broker, SASL_PLAINTEXT on a free port, with metro's topics created."""
    broker = KafkaBroker(home, free_port_pair(), sasl_users=dict(SASL_USERS))
    broker.start()
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, **broker.client_settings())
    try:
        admin.create_topics([NewTopic(name, partitions, 1)
                             for name, partitions in SASL_TOPICS.items()])
    finally:
        admin.close()
    return broker


# transaction_topic has two partitions, so its offsets are kept per partition too.
RISK_TOPICS = {"transaction_topic": 2, "transaction_decisions": 1}


@pytest.fixture
def risk_topics(kafka: str) -> str:
    admin = KafkaAdminClient(bootstrap_servers=kafka)
    try:
        for name, partitions in RISK_TOPICS.items():
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        admin.close()
    return kafka


def payment(transaction_id: str, account_id: int, amount: str) -> bytes:
    return (f'{{"transaction_id": "{transaction_id}", "account_id": {account_id},'
            f' "amount": {amount}, "timestamp": "2026-11-02T08:00:00Z"}}').encode()

"""A cluster that creates topics only through its tools (auto.create.topics.enable=false),
metro's topics not made yet: the producers stop at once with one line naming the topic
(each message used to wait five seconds for it, then fail); the bridge names a missing
outbound topic while it retries and sends the stream's rows, none lost, once the topic
exists, and names the missing inbound topics, consuming each once it exists."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from factories import add_card, at, call
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka_fixtures import PROJECT_ROOT, BridgeProcess, wait_until

from metro.app import topics_create
from metro.app.kafka_broker import KafkaBroker, free_port_pair
from metro.producers.cli import main as producers


@pytest.fixture(scope="module")
def module_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    broker = KafkaBroker(tmp_path_factory.mktemp("bare-kafka"), free_port_pair(),
                         auto_create_topics=False)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def bare_broker(module_broker: KafkaBroker) -> Iterator[KafkaBroker]:
    """The module's broker without a topic; the topics a test made are deleted after it."""
    yield module_broker
    made = sorted(topics(module_broker))
    if made:
        admin = KafkaAdminClient(bootstrap_servers=module_broker.bootstrap)
        try:
            admin.delete_topics(made)
        finally:
            admin.close()
        wait_until(lambda: not topics(module_broker), 30, f"topics {made} deleted")


def topics(broker: KafkaBroker) -> set[str]:
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None)
    try:
        return {t for t in consumer.topics() if not t.startswith("__")}
    finally:
        consumer.close()


def missing(topic: str, broker: KafkaBroker) -> str:
    return (f"topic {topic!r} does not exist on Kafka at {broker.bootstrap} and the broker did"
            " not create it: create it (`metro topics create`, or the cluster's tools), or let"
            " the broker create topics (auto.create.topics.enable=true)")


def test_the_broker_creates_no_topics_by_itself(bare_broker):
    assert "auto.create.topics.enable=false" in bare_broker.config_file.read_text().splitlines()


def test_the_producers_stop_at_once_naming_the_missing_topic(db, conn, stations, bare_broker,
                                                             monkeypatch, capsys):
    add_card(conn, 8, balance=0)
    monkeypatch.setenv("METRO_DATABASE_URL", db)
    started = time.monotonic()
    # 30 messages: waiting for the topic on each one took 150 s.
    assert producers(["recharges", "--rate", "10", "--duration", "3", "--cards", "8",
                      "--seed", "3", "--via", "kafka", "--kafka", bare_broker.bootstrap,
                      "--display-interval", "10"]) == 2
    assert time.monotonic() - started < 30
    err = capsys.readouterr().err
    assert err.splitlines() == ["producers: " + missing("RECHARGE", bare_broker)]
    assert "RECHARGE" not in topics(bare_broker)
    assert conn.execute("SELECT count(*) FROM card_events").fetchone() == (0,)


def test_the_bridge_names_the_missing_topic_and_sends_once_it_exists(db, conn, stations,
                                                                     bare_broker, tmp_path):
    add_card(conn, 7, balance=1000)
    assert call(conn, "validate_entry", 7, 1, at(0)) == (True, "Remaining Balance: 7.50")
    assert call(conn, "validate_entry", 7, 2, at(0.5)) == (False, "Fraudulent transaction")
    running = BridgeProcess(db, bare_broker.bootstrap, tmp_path / "bridge.log",
                            "--poll-interval", "0.5", "--no-inbound")
    try:
        running.wait_for_output(f"cannot send fraud: {missing('FRAUD', bare_broker)}; trying it"
                                " again in 0.5 s, the other streams go on")
        assert conn.execute("SELECT delivered FROM metro.bridge_cursors"
                            " WHERE stream = 'fraud'").fetchone() == (0,)
        admin = KafkaAdminClient(bootstrap_servers=bare_broker.bootstrap)
        try:
            admin.create_topics([NewTopic("FRAUD", 1, 1)])
        finally:
            admin.close()
        running.wait_for_output("fraud goes on again", timeout=60)
        wait_until(lambda: conn.execute("SELECT delivered FROM metro.bridge_cursors"
                                        " WHERE stream = 'fraud'").fetchone() == (1,),
                   30, "the fraud row acknowledged")
    finally:
        assert running.terminate() == 0
    consumer = KafkaConsumer(bootstrap_servers=bare_broker.bootstrap, group_id=None,
                             auto_offset_reset="earliest", consumer_timeout_ms=5000)
    try:
        consumer.assign([TopicPartition("FRAUD", 0)])
        records = list(consumer)
    finally:
        consumer.close()
    trans_id = f"7_{int(at(0.5).timestamp() * 1_000_000)}"
    assert [(r.key, json.loads(r.value)) for r in records] == [(trans_id.encode(), {
        "trans_id": trans_id, "card_id": 7, "ts": "2026-11-02T08:00:00.5+00:00",
        "station_id": 2, "activity_code": 1, "amount": 250})]
    assert "Traceback" not in running.output()


def test_the_bridge_names_the_inbound_topics_missing_and_consumes_each_once_it_exists(
        db, conn, stations, bare_broker, tmp_path):
    add_card(conn, 9, balance=100)
    running = BridgeProcess(db, bare_broker.bootstrap, tmp_path / "bridge.log",
                            "--poll-interval", "0.5")
    try:
        running.wait_for_output("no topic RECHARGE, TRAINTOPIC, transaction_topic on Kafka yet:"
                                " consumed from its first message once it exists")
        admin = KafkaAdminClient(bootstrap_servers=bare_broker.bootstrap)
        try:
            admin.create_topics([NewTopic("RECHARGE", 1, 1)])
        finally:
            admin.close()
        producer = KafkaProducer(bootstrap_servers=bare_broker.bootstrap, acks="all")
        try:
            producer.send("RECHARGE", b"9,2000,3,2026-11-02T08:05:00Z").get(timeout=10)
        finally:
            producer.close()
        running.wait_for_output("topic RECHARGE exists now: consuming it")
        wait_until(lambda: conn.execute("SELECT balance FROM cards WHERE card_id = 9"
                                        ).fetchone() == (2100,), 30, "the recharge applied")
    finally:
        assert running.terminate() == 0
    assert conn.execute("SELECT station_id, amount, ts FROM card_events WHERE card_id = 9"
                        ).fetchall() == [(3, 2000, at(minutes=5))]
    assert running.output().count("on Kafka yet") == 1
    assert "Traceback" not in running.output()


NEEDED = ["CARD_ALERT_EXPORT", "FRAUD", "transaction_decisions", "TRIPS", "TRAINTOPIC",
          "RECHARGE", "transaction_topic"]


def metro_topics_create(db: str, broker: KafkaBroker, *args: str,
                        config: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "METRO_DATABASE_URL": db}
    env.pop("METRO_KAFKA", None)
    env.pop("METRO_KAFKA_CONFIG", None)
    if config is not None:
        env["METRO_KAFKA_CONFIG"] = str(config)
    return subprocess.run([sys.executable, "-m", "metro.app.cli", "topics", "create", "--kafka",
                           broker.bootstrap, *args], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def partitions(broker: KafkaBroker) -> dict[str, int]:
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None)
    try:
        return {t: len(consumer.partitions_for_topic(t) or ()) for t in consumer.topics()
                if not t.startswith("__")}
    finally:
        consumer.close()


def test_topics_create_makes_the_topics_a_bridge_needs(db, bare_broker, tmp_path):
    zero = metro_topics_create(db, bare_broker, "--partitions", "0")
    assert (zero.returncode, zero.stdout) == (2, "")
    assert zero.stderr.splitlines()[-1] == ("metro topics create: error: argument --partitions:"
                                            " must be 1 or more: 0")
    refused = metro_topics_create(db, bare_broker, "--replication-factor", "3")
    assert refused.returncode == 2
    assert refused.stdout.splitlines() == [
        f"{name}: not created: Unable to replicate the partition 3 time(s): The target"
        " replication factor of 3 cannot be reached because only 1 broker(s) are registered."
        for name in NEEDED]
    assert refused.stderr == f"metro: 7 topic(s) not created on {bare_broker.bootstrap}\n"
    assert topics(bare_broker) == set()

    config = tmp_path / "kafka.properties"
    config.write_text("topic.partitions=2\n")
    made = metro_topics_create(db, bare_broker, config=config)
    assert (made.returncode, made.stderr) == (0, "")
    assert made.stdout.splitlines() == [
        f"{name}: created, 2 partition(s), replication factor 1" for name in NEEDED]
    assert partitions(bare_broker) == dict.fromkeys(NEEDED, 2)

    again = metro_topics_create(db, bare_broker, "--partitions", "3")
    assert (again.returncode, again.stdout.splitlines()) == (0, [f"{name}: exists"
                                                                 for name in NEEDED])
    assert partitions(bare_broker) == dict.fromkeys(NEEDED, 2)


def test_a_topic_made_between_the_listing_and_the_request_is_one_that_exists(bare_broker):
    """Another `metro topics create` (or an operator) makes FRAUD after this one listed the
    cluster's topics: the broker refuses to create it again, and that refusal is success."""
    client = KafkaAdminClient(bootstrap_servers=bare_broker.bootstrap)
    try:
        client.create_topics([NewTopic("FRAUD", 1, 1)])
        answers = topics_create.create(client, ["FRAUD", "TRIPS"], 1, 1)
    finally:
        client.close()
    assert {answer["name"]: answer["error_code"] for answer in answers} == {
        "FRAUD": 36, "TRIPS": 0}  # TOPIC_ALREADY_EXISTS
    assert topics_create.outcome_lines(["FRAUD", "TRIPS"], answers) == (
        ["FRAUD: exists", "TRIPS: created, 1 partition(s), replication factor 1"], 0)
    assert topics(bare_broker) == {"FRAUD", "TRIPS"}


def test_topics_create_needs_the_schema_installed(empty_db, bare_broker):
    made = metro_topics_create(empty_db("topics"), bare_broker)
    assert (made.returncode, made.stdout) == (2, "")
    assert made.stderr == "metro: the database has no metro schema: run `metro install` first\n"
    assert topics(bare_broker) == set()

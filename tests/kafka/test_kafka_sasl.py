"""A cluster that wants a login: a second broker with a SASL_PLAINTEXT listener. The bridge,
the producers and `metro topics` log in with METRO_KAFKA_CONFIG's credentials; a wrong
password is one line naming the mechanism and the user, never the password."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from factories import add_card, at, call
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka_fixtures import PROJECT_ROOT, SASL_USERS, BridgeProcess, start_sasl_broker, wait_until

from metro.app.kafka_broker import KafkaBroker
from metro.producers.cli import main as producers

WRONG = "not-the-password"


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    broker = start_sasl_broker(tmp_path_factory.mktemp("sasl-kafka"))
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def configs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Properties files: the right credentials (as a JAAS line), a wrong password, SCRAM."""
    home = tmp_path_factory.mktemp("sasl-config")
    files = {
        "good": "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\nsasl.jaas.config=org."
                "apache.kafka.common.security.plain.PlainLoginModule required "
                f'username="metro" password="{SASL_USERS["metro"]}";\n',
        "wrong": "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\n"
                 f"sasl.username=metro\nsasl.password={WRONG}\n",
        "scram": "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-256\n"
                 f"sasl.username=metro\nsasl.password={SASL_USERS['metro']}\n",
    }
    for name, text in files.items():
        (home / f"{name}.properties").write_text(text)
    return {name: home / f"{name}.properties" for name in files}


def end_offsets(broker: KafkaBroker, topic: str) -> dict[TopicPartition, int]:
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None,
                             **broker.client_settings())
    try:
        partitions = [TopicPartition(topic, p)
                      for p in sorted(consumer.partitions_for_topic(topic) or ())]
        return dict(consumer.end_offsets(partitions))
    finally:
        consumer.close()


def read_from(broker: KafkaBroker, start: dict[TopicPartition, int], count: int) -> list:
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None,
                             enable_auto_commit=False, **broker.client_settings())
    try:
        consumer.assign(list(start))
        for tp, offset in start.items():
            consumer.seek(tp, offset)
        records: list = []

        def arrived() -> bool:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
            return len(records) >= count

        wait_until(arrived, 60, f"{count} records")
        return records
    finally:
        consumer.close()


def group_offsets(broker: KafkaBroker, group: str) -> dict[tuple[str, int], int]:
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, **broker.client_settings())
    try:
        offsets = admin.list_group_offsets({group: None}).get(group, {})
    finally:
        admin.close()
    return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()}


def bridge(db: str, broker: KafkaBroker, config: Path, log: Path, *args: str) -> BridgeProcess:
    return BridgeProcess(db, broker.bootstrap, log, "--poll-interval", "0.5", *args,
                         extra_env={"METRO_KAFKA_CONFIG": str(config)})


def metro(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "METRO_KAFKA_CONFIG": str(config)}
    env.pop("METRO_KAFKA", None)
    return subprocess.run([sys.executable, "-m", "metro.app.cli", *args], cwd=PROJECT_ROOT,
                          env=env, capture_output=True, text=True, timeout=60, check=False)


def refused(broker: KafkaBroker, config: Path) -> str:
    return (f"Kafka at {broker.bootstrap}: authentication failed for user 'metro' with SASL "
            f"PLAIN: Invalid username or password (check {config})")


def test_bridge_and_producers_log_in(db, conn, stations, sasl_broker, configs, tmp_path,
                                     monkeypatch, capsys):
    fraud_start = end_offsets(sasl_broker, "FRAUD")
    add_card(conn, 7, balance=1000)
    add_card(conn, 8, balance=0)
    assert call(conn, "validate_entry", 7, 1, at(0)) == (True, "Remaining Balance: 7.50")
    assert call(conn, "validate_entry", 7, 2, at(0.5)) == (False, "Fraudulent transaction")

    running = bridge(db, sasl_broker, configs["good"], tmp_path / "bridge.log")
    try:
        running.wait_for_output("consuming")
        [record] = read_from(sasl_broker, fraud_start, 1)
        trans_id = f"7_{int(at(0.5).timestamp() * 1_000_000)}"
        assert record.key == trans_id.encode()
        assert json.loads(record.value) == {
            "trans_id": trans_id, "card_id": 7, "ts": "2026-11-02T08:00:00.5+00:00",
            "station_id": 2, "activity_code": 1, "amount": 250}
        wait_until(lambda: conn.execute("SELECT delivered FROM metro.bridge_cursors"
                                        " WHERE stream = 'fraud'").fetchone() == (1,),
                   30, "the fraud row acknowledged")

        # The producers publish recharges through the same login; the bridge's consumer
        # applies them and its group client mirrors the offsets.
        monkeypatch.setenv("METRO_DATABASE_URL", db)
        monkeypatch.setenv("METRO_KAFKA_CONFIG", str(configs["good"]))
        assert producers(["recharges", "--rate", "10", "--duration", "1", "--cards", "8",
                          "--seed", "3", "--via", "kafka", "--kafka", sasl_broker.bootstrap,
                          "--display-interval", "10"]) == 0
        out = capsys.readouterr().out
        assert f"csv messages to Kafka at {sasl_broker.bootstrap}" in out
        [sent] = [int(line.split()[1]) for line in out.splitlines()
                  if line.startswith("recharges: ") and " calls in " in line]
        assert sent == 10
        wait_until(lambda: conn.execute("SELECT sum(applied), sum(dead_lettered) FROM"
                                        " metro.bridge_inbound_offsets WHERE topic = 'RECHARGE'"
                                        ).fetchone() == (10, 0), 60, "the recharges applied")
        assert conn.execute("SELECT count(*) FROM card_events WHERE activity_code = 2"
                            " AND accept = 1").fetchone() == (10,)
        stored = dict(conn.execute("SELECT kafka_partition, next_offset FROM"
                                   " metro.bridge_inbound_offsets WHERE topic = 'RECHARGE'"
                                   ).fetchall())
        wait_until(lambda: {p: o for (t, p), o in group_offsets(sasl_broker, "metro-bridge")
                            .items() if t == "RECHARGE"} == stored, 30,
                   "the group offsets mirrored")
    finally:
        assert running.terminate() == 0


def test_bridge_with_a_wrong_password_says_so_and_stops(db, sasl_broker, configs, tmp_path):
    running = bridge(db, sasl_broker, configs["wrong"], tmp_path / "bridge.log", "--no-inbound")
    assert running.process.wait(30) == 2
    output = running.output()
    assert output.splitlines()[-1] == "metro: " + refused(sasl_broker, configs["wrong"])
    assert "Traceback" not in output and WRONG not in output


def test_topics_list_logs_in(sasl_broker, configs):
    listed = metro("topics", "list", "--kafka", sasl_broker.bootstrap, config=configs["good"])
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[:2] for line in listed.stdout.splitlines()[1:]
            if line.startswith("FRAUD ")] == [["FRAUD", "0"]]

    wrong = metro("topics", "list", "--kafka", sasl_broker.bootstrap, config=configs["wrong"])
    assert (wrong.returncode, wrong.stdout) == (2, "")
    assert wrong.stderr == f"metro: {refused(sasl_broker, configs['wrong'])}\n"

    scram = metro("topics", "list", "--kafka", sasl_broker.bootstrap, config=configs["scram"])
    assert (scram.returncode, scram.stdout) == (2, "")
    assert scram.stderr == (
        f"metro: Kafka at {sasl_broker.bootstrap}: authentication failed for user 'metro' with"
        f" SASL SCRAM-SHA-256: the broker does not offer this mechanism (it offers PLAIN)"
        f" (check {configs['scram']})\n")


def test_producers_with_a_wrong_password(sasl_broker, configs, monkeypatch, capsys):
    monkeypatch.setenv("METRO_KAFKA_CONFIG", str(configs["wrong"]))
    assert producers(["payments", "--duration", "1", "--via", "kafka",
                      "--kafka", sasl_broker.bootstrap]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == "producers: " + refused(sasl_broker, configs["wrong"])
    assert WRONG not in err


def test_the_broker_asks_clients_for_sasl_plain_and_keeps_its_controller_plaintext(sasl_broker):
    lines = sasl_broker.config_file.read_text().splitlines()
    port = sasl_broker.port
    assert f"listeners=SASL_PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{port + 1}" in lines
    assert ("listener.security.protocol.map=SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT"
            in lines)
    assert "sasl.enabled.mechanisms=PLAIN" in lines
    assert ("listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security"
            '.plain.PlainLoginModule required username="admin" password="admin-secret" '
            'user_admin="admin-secret" user_metro="metro-secret";') in lines


def test_broker_users_must_fit_the_jaas_line(tmp_path):
    from metro.app.kafka_broker import KafkaUnavailable

    with pytest.raises(KafkaUnavailable, match="^the password of SASL user 'metro' must not be "
                                               "empty nor hold spaces, quotes or backslashes$"):
        KafkaBroker(tmp_path, 1, sasl_users={"metro": 'a"b'}).server_properties()
    with pytest.raises(KafkaUnavailable, match="^SASL user name 'me tro': use letters, digits"):
        KafkaBroker(tmp_path, 1, sasl_users={"me tro": "pw"}).server_properties()


def test_a_login_refused_after_the_bridge_ran_is_an_outage(db, conn, sasl_broker, configs,
                                                           tmp_path):
    # Credentials rotated on the client's side first: the bridge, once it has run, waits
    # for the login to work again instead of stopping.
    config = tmp_path / "rotating.properties"
    config.write_text(configs["good"].read_text())
    running = bridge(db, sasl_broker, config, tmp_path / "bridge.log", "--no-inbound")
    try:
        running.wait_for_output("holding the lease")
        config.write_text(configs["wrong"].read_text())
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                     " WHERE application_name = 'metro bridge'")
        running.wait_for_output(refused(sasl_broker, config))
        assert running.process.poll() is None
        config.write_text(configs["good"].read_text())
        wait_until(lambda: running.output().count("holding the lease") == 2, 60,
                   "the bridge back once the login works")
    finally:
        assert running.terminate() == 0
    assert WRONG not in running.output()

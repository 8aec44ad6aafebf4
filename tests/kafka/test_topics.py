"""`metro topics list|tail` against the session's real Kafka broker, with a real bridge."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from dashboard_fixtures import PROJECT_ROOT, free_port, metro_env, run_metro
from kafka import KafkaConsumer, OffsetAndMetadata, TopicPartition
from kafka_fixtures import wait_until


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert result.stdout == ""
    return lines[0]


def fraud_swipe(conn) -> tuple[str, int]:
    """A cloned card at two gates in one second: the trans_id and stream position of its row."""
    conn.execute("INSERT INTO metro.cards (card_id, balance) VALUES (4242, 5000)")
    # One second for both swipes, taken once: each statement has its own now().
    second = conn.execute("SELECT date_trunc('second', now()) - interval '1 second'").fetchone()[0]
    conn.execute("SELECT * FROM metro.validate_entry(4242, 3, %s + interval '0.1 second')",
                 (second,))
    row = conn.execute("SELECT * FROM metro.validate_entry(4242, 9, %s + interval '0.6 second')",
                       (second,)).fetchone()
    assert row is not None and row[1] == "Fraudulent transaction"
    fraud = conn.execute("SELECT trans_id, position FROM metro.fraud").fetchone()
    assert fraud is not None
    return fraud[0], fraud[1]


def end_offset(bootstrap: str, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        tp = TopicPartition(topic, 0)
        return int(consumer.end_offsets([tp])[tp])
    finally:
        consumer.close()


def test_tail_shows_a_fraud_row_with_its_key_and_position(db, conn, stations, kafka,
                                                          start_bridge):
    trans_id, position = fraud_swipe(conn)
    start_bridge(db, "--no-inbound")
    wait_until(lambda: conn.execute("SELECT pending FROM metro.bridge_lag()"
                                    " WHERE stream = 'fraud'").fetchone() == (0,),
               60, "the bridge to deliver the fraud row")

    result = run_metro("topics", "tail", "FRAUD", "--from-beginning", "--key", trans_id,
                       "--limit", "1", "--kafka", kafka)
    assert result.returncode == 0, result.stderr
    head, *body = result.stdout.splitlines()
    assert re.fullmatch(rf"FRAUD\[0\] offset \d+  key {trans_id}  position {position}  "
                        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", head), head
    value = json.loads("\n".join(body))
    assert value["trans_id"] == trans_id
    assert value["card_id"] == 4242 and value["station_id"] == 9 and value["activity_code"] == 1
    assert body[0] == "{" and body[1].startswith('  "trans_id": ')      # pretty, one field a line

    listing = run_metro("topics", "list", "--kafka", kafka)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].split() == ["topic", "partition", "end", "offset", "metro-bridge", "offset",
                                "lag"]
    fraud = [line.split() for line in lines[1:] if line.split()[0] == "FRAUD"]
    assert fraud == [["FRAUD", "0", str(end_offset(kafka, "FRAUD")), "-", "-"]]
    assert not any(line.startswith("__") for line in lines)

    # Once the bridge's group has committed an offset, the lag behind the end shows.
    end = end_offset(kafka, "FRAUD")
    group = KafkaConsumer(bootstrap_servers=kafka, group_id="metro-bridge",
                          enable_auto_commit=False)
    try:
        group.commit({TopicPartition("FRAUD", 0): OffsetAndMetadata(end - 1, "", -1)})
    finally:
        group.close()
    listing = run_metro("topics", "list", "--kafka", kafka)
    fraud = [line.split() for line in listing.stdout.splitlines() if line.startswith("FRAUD ")]
    assert fraud == [["FRAUD", "0", str(end), str(end - 1), "1"]]


def test_tail_follows_new_messages(db, conn, stations, kafka, start_bridge):
    """Without --from-beginning, only what arrives after the start is shown."""
    tail = subprocess.Popen(
        [sys.executable, "-m", "metro.app.cli", "topics", "tail", "FRAUD", "--limit", "1",
         "--kafka", kafka], cwd=PROJECT_ROOT, env=metro_env(None), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        # It says where it starts reading once its offsets are resolved: only then may the
        # row arrive.
        started = tail.stderr.readline() if tail.stderr else ""
        assert re.fullmatch(r"FRAUD: reading partition 0 from offset \d+; waiting for"
                            r" messages \(stops after 1\)\n", started), started
        trans_id, position = fraud_swipe(conn)
        start_bridge(db, "--no-inbound")
        out, err = tail.communicate(timeout=60)
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait()
    assert tail.returncode == 0, err
    assert f"key {trans_id}  position {position}" in out.splitlines()[0]


def test_unknown_topic_is_one_line(kafka):
    message = one_line_error(run_metro("topics", "tail", "NO_SUCH_TOPIC", "--kafka", kafka))
    assert message.startswith(f"metro: unknown topic 'NO_SUCH_TOPIC' on {kafka} (topics: ")
    assert "FRAUD" in message


def test_a_broker_not_answering_is_one_line():
    address = f"127.0.0.1:{free_port()}"
    for args in (["list"], ["tail", "FRAUD"]):
        message = one_line_error(run_metro("topics", *args, "--kafka", address))
        assert message == f"metro: Kafka broker at {address} is not answering"


def test_bad_arguments():
    result = run_metro("topics", "tail", "FRAUD", "--limit", "-1")
    assert result.returncode == 2 and "must not be negative: -1" in result.stderr
    result = run_metro("topics", "list", "--kafka", "no-port")
    assert one_line_error(result) == "metro: not a Kafka address (HOST:PORT): 'no-port'"

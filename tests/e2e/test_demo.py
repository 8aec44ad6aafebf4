"""`metro demo` as a user runs it, for a few seconds: its summary agrees with the database,
with the Kafka topics and with the JSON-lines file it falls back to without Java."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psycopg
import pytest
from kafka_fixtures import PROJECT_ROOT, skip_inbound_backlog

from metro.app.kafka_broker import free_port_pair

TICK = r"^\[3 s, \d+ s left\]"   # the plain line 3 s into the load

CARDS = 3000
TOPICS = ("FRAUD", "CARD_ALERT_EXPORT", "TRIPS")
STREAM_TOPICS = {"fraud": "FRAUD", "card_alert_export": "CARD_ALERT_EXPORT", "trips": "TRIPS"}


def demo_env(dsn: str, home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PG") and k not in ("METRO_KAFKA", "JAVA_HOME")}
    # A port of its own: no broker of another METRO_HOME is found by accident.
    env.update(METRO_DATABASE_URL=dsn, METRO_HOME=str(home), PYTHONUNBUFFERED="1",
               METRO_KAFKA_PORT=str(free_port_pair()), **extra)
    return env


def demo(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "metro.app.cli", "demo", "--rate", "100", "--cards", str(CARDS),
         *args], cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen[str], expected_status: int = 0) -> str:
    output, _ = process.communicate(timeout=60)
    assert process.returncode == expected_status, output
    return output


def until_tick(process: subprocess.Popen[str]) -> list[str]:
    """The demo's output up to its plain line 3 s into the load (the load is running)."""
    assert process.stdout is not None
    head = []
    for text in process.stdout:
        head.append(text)
        if re.match(TICK, text):
            break
    return head


class Totals:
    """What the database holds now, to compare before and after a run."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.events = dict(conn.execute(
            "SELECT activity_code, count(*) FROM metro.card_events GROUP BY 1").fetchall())
        self.fraud_events = conn.execute(
            "SELECT count(*) FROM metro.card_events WHERE accept = -1").fetchone()[0]
        self.streams = {table: conn.execute(f"SELECT count(*) FROM metro.{table}").fetchone()[0]
                        for table in STREAM_TOPICS}

    def since(self, before: Totals) -> dict[str, int]:
        def delta(activity: int) -> int:
            return self.events.get(activity, 0) - before.events.get(activity, 0)
        return {"entries": delta(1), "exits": delta(-1), "recharges": delta(2),
                "fraud events": self.fraud_events - before.fraud_events,
                **{table: self.streams[table] - before.streams[table] for table in STREAM_TOPICS}}


def parse_summary(output: str) -> dict[str, int]:
    """The summary's figures, by the names Totals.since uses."""
    events = re.search(r"^card events: (\d+) recorded \(entries (\d+), exits (\d+), "
                       r"recharges (\d+)\)$", output, re.M)
    fraud = re.search(r"^fraud found: (\d+) entries refused as fraud, (\d+) fraud rows$",
                      output, re.M)
    streams = re.search(r"^trips: (\d+)   alerts: (\d+)", output, re.M)
    assert events and fraud and streams, output
    total, entries, exits, recharges = map(int, events.groups())
    assert total == entries + exits + recharges
    return {"entries": entries, "exits": exits, "recharges": recharges,
            "fraud events": int(fraud.group(1)), "fraud": int(fraud.group(2)),
            "trips": int(streams.group(1)), "card_alert_export": int(streams.group(2))}


def delivered(output: str, destination: str) -> dict[str, int]:
    """Rows per topic on the summary's `delivered to ...` or `appended to ...` line."""
    match = re.search(rf"^{re.escape(destination)}: (\d+) rows \((.*)\)$", output, re.M)
    assert match, output
    per_topic = {topic: int(count) for topic, count in
                 (part.rsplit(" ", 1) for part in match.group(2).split(", "))}
    assert sum(per_topic.values()) == int(match.group(1))
    return per_topic


def check_against_database(output: str, before: Totals, after: Totals) -> dict[str, int]:
    summary = parse_summary(output)
    assert summary == after.since(before)
    assert summary["entries"] > 0 and summary["fraud"] > 0 and summary["card_alert_export"] > 0
    # Fraud comes from the cloned cards alone: a burst of 6 entries trips the rules 5 times
    # at most.
    bursts = re.search(r"^cloned-card bursts: (\d+) of 6 entries", output, re.M)
    assert bursts and summary["fraud events"] <= 5 * int(bursts.group(1)), output
    # The rejected calls' reasons add up to the rejected column.
    table = {row[0]: row[1:] for row in (line.split() for line in output.splitlines())
             if row and row[0] in ("entry", "recharge") and len(row) == 5}
    for call, counts in table.items():
        rejected = int(counts[1])
        reasons = re.search(rf"^  {call} rejected (\d+): (.+)$", output, re.M)
        if rejected:
            assert reasons and int(reasons.group(1)) == rejected, output
            assert sum(int(part.rsplit(" ", 1)[1])
                       for part in reasons.group(2).split(", ")) == rejected
    # Off a terminal no line is printed twice in a row.
    lines = output.splitlines()
    assert all(a != b or not a for a, b in zip(lines, lines[1:], strict=False)), output
    return summary


def test_demo_streams_to_kafka_and_a_second_run_reuses_the_cards(db, conn, kafka, topic_reader,
                                                                 tmp_path):
    skip_inbound_backlog(db, kafka)
    env = demo_env(db, tmp_path, METRO_KAFKA=kafka)
    destination = f"delivered to Kafka at {kafka}"

    readers = {topic: topic_reader(topic) for topic in TOPICS}
    before = Totals(conn)
    output = finish(demo(env, "--seconds", "6", "--no-dashboard"))
    summary = check_against_database(output, before, Totals(conn))
    assert f"cards: generated and loaded {CARDS}" in output
    assert "stations.csv: read 15, loaded 15, invalid 0" in output
    assert f"Kafka: the broker at {kafka}" in output
    assert ("trains: 8 trains on 15 stations, running the line 20x faster than data/line.csv"
            " (on the real clock)") in output.splitlines()
    assert re.search(r"^riders: 100 entries/s, rides 20x shorter than data/line.csv \(timestamps"
                     r" on the real clock\)", output, re.M), output
    assert re.search(TICK + r" \d+ swipes/s, acceptance", output, re.M), output
    assert re.search(r"^\[6 s, load stopped\] ", output, re.M), output
    assert "dashboard" not in output
    assert "bridge: stopped" in output
    sent = delivered(output, destination)
    messages = {topic: len(reader.read_idle()) for topic, reader in readers.items()}
    assert {topic: sent[topic] for topic in TOPICS} == messages == {
        STREAM_TOPICS[table]: summary[table] for table in STREAM_TOPICS}

    # Second run, stopped with Ctrl-C once the view is up: the cards are reused and the
    # summary still matches; the dashboard answered meanwhile, on the port asked for.
    readers = {topic: topic_reader(topic) for topic in TOPICS}
    before = Totals(conn)
    port = free_port_pair()
    process = demo(env, "--seconds", "60", "--dashboard-port", str(port))
    head = until_tick(process)
    url = f"http://127.0.0.1:{port}/"
    assert (f"dashboard: {url} (the live page; Prometheus metrics at {url}metrics), open "
            "while the demo runs\n") in head
    with urllib.request.urlopen(url + "healthz", timeout=10) as response:
        assert response.read() == b"ok"
    with urllib.request.urlopen(url + "api/snapshot", timeout=10) as response:
        assert json.loads(response.read())["swipes_per_second"] >= 0
    process.send_signal(signal.SIGINT)
    output = "".join(head) + finish(process, 130)
    assert f"dashboard: stopped ({url}); `metro dashboard` serves it on its own" in output
    with pytest.raises(OSError):
        urllib.request.urlopen(url + "healthz", timeout=2)
    summary = check_against_database(output, before, Totals(conn))
    assert f"cards: reusing the {CARDS} cards already loaded" in output
    assert re.search(r"^summary: stopped by Ctrl-C after \d+\.\d s", output, re.M), output
    sent = delivered(output, destination)
    messages = {topic: len(reader.read_idle()) for topic, reader in readers.items()}
    assert {topic: sent[topic] for topic in TOPICS} == messages == {
        STREAM_TOPICS[table]: summary[table] for table in STREAM_TOPICS}
    assert conn.execute("SELECT count(*) FROM metro.cards").fetchone()[0] == CARDS


def test_demo_without_java_appends_the_stream_rows_to_a_jsonlines_file(db, conn, tmp_path):
    env = demo_env(db, tmp_path, JAVA_HOME=str(tmp_path / "no-java"))
    path = tmp_path / "demo" / "streams.jsonl"

    before = Totals(conn)
    output = finish(demo(env, "--seconds", "5", "--no-dashboard"))
    summary = check_against_database(output, before, Totals(conn))
    assert "Kafka: not available (Java 17 or newer is needed" in output
    assert f"Kafka: stream rows go to the JSON-lines file {path} instead" in output
    sent = delivered(output, f"appended to {path}")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == sum(sent.values())
    # Every stream row of the run, once, with its position.
    written = {(STREAM_TOPICS[table], position) for table in STREAM_TOPICS
               for (position,) in conn.execute(f"SELECT position FROM metro.{table}")}
    assert {(line["topic"], line["position"]) for line in lines} == written
    assert {topic: sum(line["topic"] == topic for line in lines) for topic in TOPICS} == {
        STREAM_TOPICS[table]: summary[table] for table in STREAM_TOPICS}


def test_a_second_ctrl_c_stops_without_waiting_for_the_bridge_and_loses_nothing(db, conn,
                                                                              tmp_path):
    """The stream file cannot be written (a directory stands at its path), so the bridge
    forwards nothing and one Ctrl-C would wait the whole DRAIN_SECONDS (15 s) for it. A
    second Ctrl-C skips that wait: the demo ends at once, its summary still agrees with
    the database, and every row it wrote waits in the outbox for the next bridge."""
    env = demo_env(db, tmp_path, JAVA_HOME=str(tmp_path / "no-java"))
    path = tmp_path / "demo" / "streams.jsonl"
    path.mkdir(parents=True)
    before = Totals(conn)
    process = demo(env, "--seconds", "60", "--no-dashboard")
    head = until_tick(process)
    process.send_signal(signal.SIGINT)
    time.sleep(1)
    stopping = time.monotonic()
    process.send_signal(signal.SIGINT)
    output = "".join(head) + finish(process, 130)
    assert time.monotonic() - stopping < 10, output
    assert f"bridge: IsADirectoryError: [Errno 21] Is a directory: '{path}'" in output
    assert "Traceback" not in output
    summary = check_against_database(output, before, Totals(conn))
    assert delivered(output, f"appended to {path}") == dict.fromkeys(
        ("CARD_ALERT_EXPORT", "FRAUD", "transaction_decisions", "TRIPS"), 0)
    written = sum(summary[table] for table in STREAM_TOPICS)
    assert re.search(rf"^not yet forwarded: {written} rows; ", output, re.M), output
    assert conn.execute("SELECT sum(pending) FROM metro.bridge_lag()").fetchone() == (written,)


SILENT = f"127.0.0.1:{free_port_pair()}"


@pytest.mark.parametrize(("args", "message"), [
    (("--kafka", SILENT), f"metro: Kafka at {SILENT} does not answer (--kafka or METRO_KAFKA); "
                          "start it, or unset METRO_KAFKA to use the project's broker"),
    (("--seconds", "0"), "metro demo: error: argument --seconds: must be positive: 0"),
    (("--rate", "inf"), "metro demo: error: argument --rate: not a finite number: 'inf'"),
    (("--cards", "-5"), "metro demo: error: argument --cards: must be positive: -5"),
])
def test_bad_options_stop_the_demo_before_anything_is_written(db, conn, tmp_path, args,
                                                              message):
    output = finish(demo(demo_env(db, tmp_path), *args), 2)
    assert output.splitlines()[-1] == message
    assert conn.execute("SELECT (SELECT count(*) FROM metro.cards),"
                        " (SELECT count(*) FROM metro.stations),"
                        " (SELECT count(*) FROM metro.card_events)").fetchone() == (0, 0, 0)


def test_too_few_cards_are_said_and_still_only_clones_are_fraud(db, conn, tmp_path):
    """50 cards for 100 entries/s: said before the run, and the entries without a card
    that no fraud rule would flag are skipped, never sent as fraud."""
    env = demo_env(db, tmp_path, JAVA_HOME=str(tmp_path / "no-java"))
    process = subprocess.Popen(
        [sys.executable, "-m", "metro.app.cli", "demo", "--rate", "100", "--cards", "50",
         "--seconds", "4", "--no-dashboard"], cwd=PROJECT_ROOT, env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = finish(process)
    assert re.search(r"^riders: warning: too few cards: an honest card may enter 5 times in "
                     r"3600 s before a fraud rule flags it, so 49 cards carry 245 entries, and "
                     r"the run at 97.51 honest entries/s needs 391: entries with no card left "
                     r"are skipped \(use --cards 80 or more, or a lower --rate\)$", output, re.M), \
        output
    assert re.search(r"^honest entries skipped: \d+, for want of a card", output, re.M), output
    bursts = re.search(r"^cloned-card bursts: (\d+) of 6 entries", output, re.M)
    fraud = conn.execute("SELECT count(*) FROM metro.card_events WHERE accept = -1").fetchone()[0]
    assert bursts and fraud <= 5 * int(bursts.group(1))
    # An honest card (not cloned: no fraud row) entered 5 times at most.
    assert conn.execute(
        "SELECT coalesce(max(n), 0) FROM (SELECT count(*) n FROM metro.card_events"
        " WHERE activity_code = 1 AND card_id NOT IN (SELECT card_id FROM metro.fraud)"
        " GROUP BY card_id) c").fetchone()[0] <= 5

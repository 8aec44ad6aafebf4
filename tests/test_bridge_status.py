"""`metro bridge --status` and the command's one-line errors and clean stop."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import psycopg
import pytest
from kafka_fixtures import PROJECT_ROOT, wait_until
from psycopg import sql

from metro.app.kafka_broker import free_port_pair
from metro.database import with_dbname

INSERT_FRAUD = ("INSERT INTO metro.fraud (trans_id, card_id, ts, station_id, activity_code, amount)"
                " SELECT n || '_1', n, '2026-11-02 08:00:00+00', 1, 1, 250"
                " FROM generate_series(1, 3) n")


def metro(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "METRO_DATABASE_URL": dsn}
    return subprocess.run([sys.executable, "-m", "metro.app.cli", *args], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_status_of_a_bridge_that_cannot_reach_kafka(db, conn, start_bridge):
    conn.execute(INSERT_FRAUD)
    nowhere = f"127.0.0.1:{free_port_pair()}"
    bridge = start_bridge(db, bootstrap=nowhere)
    error = f"Kafka at {nowhere}: KafkaTimeoutError: Unable to bootstrap from {nowhere}"
    bridge.wait_for_output(error)
    bridge.wait_for_output("retrying in 0.5 s")

    status = metro(db, "bridge", "--status")
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert re.fullmatch(rf"running: {socket.gethostname()}:{bridge.process.pid} holds the lease "
                        r"since \S+ \S+ \(heartbeat [\d.]+ s ago\)", lines[0])
    assert lines[1].startswith(f"last error: {error} (")
    assert lines[2] == "commit horizon: no open transaction holds delivery back"
    assert re.fullmatch(r"fraud +FRAUD +0 +3  2026-11-02 08:00:00 \(.*\) +-", lines[6]), lines
    assert re.fullmatch(r"card_alert_export +CARD_ALERT_EXPORT +0 +0  - +-", lines[5]), lines
    assert "outbound dead letters: 0" in lines
    assert lines[-2:] == ["(nothing consumed yet)", "dead letters: 0"]

    assert bridge.terminate() == 0
    assert bridge.output().endswith(" INFO metro.bridge: stopped\n")
    stopped = metro(db, "bridge", "--status").stdout.splitlines()
    assert stopped[0].startswith(f"not running: no bridge holds the lease (last holder "
                                 f"{socket.gethostname()}:{bridge.process.pid}, heartbeat ")


def test_status_lists_inbound_offsets_and_dead_letters(db, conn):
    conn.execute("INSERT INTO metro.bridge_inbound_offsets (topic, kafka_partition, next_offset,"
                 " applied, dead_lettered) VALUES ('RECHARGE', 1, 12, 10, 2)")
    conn.execute("INSERT INTO metro.bridge_dead_letters (topic, kafka_partition, kafka_offset,"
                 " value, reason) VALUES ('RECHARGE', 1, 3, 'x', 'r'),"
                 " ('RECHARGE', 1, 7, 'y', 'r')")
    lines = metro(db, "bridge", "--status").stdout.splitlines()
    assert re.fullmatch(r"RECHARGE +1 +12 +10 +2  [\d.]+ s ago", lines[-2]), lines
    assert lines[-1] == "dead letters: 2 (SELECT * FROM metro.bridge_dead_letters)"
    assert lines[0] == "not running: no bridge holds the lease"
    assert lines[1] == "last error: none"


@pytest.mark.parametrize("args, message", [
    (["--batch-size", "0"], "argument --batch-size: must be positive: 0"),
    (["--retention", "soon"], "argument --retention: not a duration: 'soon' "
                              "(examples: 90s, 15m, 24h, 7d)"),
    (["--poll-interval", "fast"], "argument --poll-interval: not a number: 'fast'"),
])
def test_bad_options_are_refused_in_one_line(db, args, message):
    result = metro(db, "bridge", *args)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == f"metro bridge: error: {message}"


def test_a_database_without_the_bridge_schema_is_refused(server_dsn, kafka):
    name = f"metro_bare_{os.getpid()}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        result = metro(with_dbname(server_dsn, name), "bridge", "--kafka", kafka)
        assert result.returncode == 2
        assert result.stderr == ("metro: the database has no bridge tables (schema revision "
                                 "0002); run `metro install` first\n")
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))


def test_sigterm_while_waiting_for_the_lease_stops_cleanly(db, start_bridge):
    first = start_bridge(db, "--no-inbound")
    first.wait_for_output("holding the lease")
    second = start_bridge(db, "--no-inbound")
    second.wait_for_output("waiting for the lease")
    assert second.terminate() == 0
    assert first.terminate() == 0
    wait_until(lambda: "stopped" in second.output(), 5, "second bridge to say it stopped")

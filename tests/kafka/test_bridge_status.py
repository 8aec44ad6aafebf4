"""`metro bridge --status` and the command's one-line errors and clean stop."""

from __future__ import annotations

import os
import re
import socket

import psycopg
import pytest
from commands import metro
from factories import INSERT_FRAUD
from kafka_fixtures import wait_until
from psycopg import sql

from metro.app.kafka_broker import free_port_pair
from metro.database import with_dbname


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
    assert lines[2] == "commit horizon: no transaction open for 1 s or more holds delivery back"
    # Columns as wide as their content: transaction_decisions lines up with the others.
    assert lines[4].startswith("stream                topic                 delivered pending "
                               "oldest pending (event time) ")
    assert [line[:62] for line in lines[5:9]] == [
        "card_alert_export     CARD_ALERT_EXPORT             0       0 ",
        "fraud                 FRAUD                         0       3 ",
        "transaction_decisions transaction_decisions         0       0 ",
        "trips                 TRIPS                         0       0 "]
    assert re.fullmatch(r"2026-11-02 08:00:00 \(.+ ago\)  -", lines[6][62:]), lines
    assert lines[4].index("last ack") == len(lines[6]) - 1
    assert lines[9] == "outbound dead letters: 0"
    assert lines[-2:] == ["inbound: nothing consumed yet", "dead letters: 0"]

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
    assert lines[-3] == "inbound topic partition next offset applied dead-lettered  updated"
    assert re.fullmatch(r"RECHARGE              1          12      10             2  [\d.]+ s ago",
                        lines[-2]), lines
    assert re.fullmatch(r"dead letters: 2; newest RECHARGE\[1\]@7 \([\d.]+ s ago\): r "
                        r"\(SELECT \* FROM metro.bridge_dead_letters\)", lines[-1]), lines
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
        assert result.stderr == ("metro: the database has no metro schema: run `metro install`"
                                 " first\n")
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


def test_after_an_outage_the_bridge_says_it_caught_up_and_the_error_shows_resolved(
        db, conn, start_bridge):
    bridge = start_bridge(db, "--no-inbound")
    bridge.wait_for_output("holding the lease")
    conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                 " WHERE application_name = 'metro bridge' AND datname = current_database()")
    bridge.wait_for_output("retrying in")
    conn.execute(INSERT_FRAUD)
    bridge.wait_for_output("caught up: ")
    caught_up = [line for line in bridge.output().splitlines() if "caught up: " in line]
    assert len(caught_up) == 1
    assert re.search(r" INFO metro\.bridge: caught up: forwarded 3 rows that waited; nothing "
                     r"pending [\d.]+ s after the outage began \(PostgreSQL unavailable: .+\)$",
                     caught_up[0]), caught_up
    wait_until(lambda: metro(db, "bridge", "--status").stdout.splitlines()[1].startswith(
        "last error (resolved "), 10, "the error to show resolved")
    assert bridge.terminate() == 0
    lines = metro(db, "bridge", "--status").stdout.splitlines()
    assert lines[0].startswith("not running: ")
    assert re.fullmatch(r"last error \(resolved [\d.]+ s later\): PostgreSQL unavailable: .+ "
                        r"\([\d.]+ s ago\)", lines[1]), lines

"""Nobody but the bridge can stop delivery: the lease is a row only metro_bridge's functions
write, a dead holder's lease is taken over at once and an expired one when it is stale, a
bridge that lost it cannot move a cursor, and --status names the open transaction that
holds delivery back."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator

import psycopg
import pytest
from commands import metro
from factories import INSERT_FRAUD
from kafka_fixtures import wait_until
from psycopg import sql
from psycopg.conninfo import make_conninfo
from roles import login_role


@pytest.fixture
def intruder(server_dsn: str) -> Iterator[str]:
    """A login role with no grants at all."""
    with login_role(server_dsn, "intruder") as name:
        yield name


def delivered(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT delivered FROM metro.bridge_cursors WHERE stream = 'fraud'"
                            ).fetchone()[0]


def test_a_role_without_grants_cannot_stop_delivery(db, conn, intruder, start_bridge,
                                                    topic_reader):
    reader = topic_reader("FRAUD")
    first = start_bridge(db, "--no-inbound")
    first.wait_for_output("holding the lease")
    first.kill()
    with psycopg.connect(db, autocommit=True) as attacker:
        attacker.execute(sql.SQL("SET SESSION AUTHORIZATION {}").format(
            sql.Identifier(intruder)))
        # What stopped every bridge before: the lease was this advisory lock.
        assert attacker.execute("SELECT pg_try_advisory_lock(1836348002, 1)").fetchone() == (
            True,)
        for statement in ("SELECT metro.bridge_take_lease('me:1', '1 hour')",
                          "UPDATE metro.bridge_state SET lease_pid = pg_backend_pid()",
                          "SELECT metro.bridge_report_error('fake')"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                attacker.execute(statement)
        conn.execute(INSERT_FRAUD)
        second = start_bridge(db, "--no-inbound")
        second.wait_for_output("holding the lease", timeout=15)
        assert len(reader.read(3)) == 3
        status = metro(db, "bridge", "--status").stdout.splitlines()
        assert status[0].startswith(
            f"running: {socket.gethostname()}:{second.process.pid} holds the lease since ")
    assert second.terminate() == 0


def test_metro_bridge_may_not_write_the_bridge_tables_or_streams(conn):
    conn.execute(INSERT_FRAUD)
    conn.execute("SET ROLE metro_bridge")
    for statement in ("DELETE FROM metro.fraud",
                      "UPDATE metro.bridge_cursors SET position = 1000000",
                      "UPDATE metro.bridge_state SET lease_pid = NULL",
                      "INSERT INTO metro.bridge_acks (stream, txid, position) VALUES"
                      " ('fraud', '1', 1)",
                      "DELETE FROM metro.bridge_dead_letters"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)
    conn.execute("RESET ROLE")
    assert conn.execute("SELECT count(*) FROM metro.fraud").fetchone() == (3,)


def test_the_lease_is_taken_over_only_when_stale(db):
    with psycopg.connect(db, autocommit=True) as holder, \
            psycopg.connect(db, autocommit=True) as other:
        for session in (holder, other):
            session.execute("SET ROLE metro_bridge")
        assert holder.execute("SELECT bridge_take_lease('a:1', '2 seconds')").fetchone() == (
            True,)
        assert other.execute("SELECT bridge_take_lease('b:2', '30 seconds')").fetchone() == (
            False,)
        # A session without the lease may not move a cursor while the holder lives.
        with pytest.raises(psycopg.Error) as error:
            other.execute("SELECT bridge_ack('fraud', '5', 5, 1)")
        assert error.value.sqlstate == "MT012"
        assert error.value.diag.message_primary == (
            "bridge_ack: another bridge holds the lease (a:1)")
        assert holder.execute("SELECT bridge_renew_lease('1 second')").fetchone() == (True,)
        time.sleep(1.2)
        # Expired though its backend lives: a hung bridge's lease is taken over.
        assert other.execute("SELECT bridge_take_lease('b:2', '30 seconds')").fetchone() == (
            True,)
        assert holder.execute("SELECT bridge_renew_lease('30 seconds')").fetchone() == (False,)
        with pytest.raises(psycopg.Error) as error:
            holder.execute("SELECT bridge_ack('fraud', '5', 5, 1)")
        assert error.value.sqlstate == "MT012"
        pid = other.info.backend_pid
    # The holder's session ended: its lease is free at once.
    with psycopg.connect(db, autocommit=True) as third:
        third.execute("SET ROLE metro_bridge")
        wait_until(lambda: third.execute("SELECT NOT EXISTS (SELECT FROM pg_stat_activity"
                                         " WHERE pid = %s)", (pid,)).fetchone()[0],
                   10, "the old holder's backend to end")
        assert third.execute("SELECT bridge_take_lease('c:3', '30 seconds')").fetchone() == (
            True,)
        assert third.execute("SELECT holder, lease_pid = pg_backend_pid() FROM bridge_state"
                             ).fetchone() == ("c:3", True)
        assert third.execute("SELECT bridge_release_lease()").fetchone() == (True,)
        assert third.execute("SELECT holder, lease_pid FROM bridge_state").fetchone() == (
            "c:3", None)


def test_status_names_the_transaction_holding_delivery_back(db, conn, start_bridge,
                                                            topic_reader):
    reader = topic_reader("FRAUD")
    bridge = start_bridge(db, "--no-inbound")
    bridge.wait_for_output("holding the lease")
    with psycopg.connect(db, application_name="forgotten session") as idle:
        idle.execute("SELECT pg_current_xact_id()")  # open, with a transaction id, then idle
        conn.execute(INSERT_FRAUD)
        time.sleep(1.5)
        assert reader.read_idle(1.0) == []  # held back, by design
        lines = metro(db, "bridge", "--status").stdout.splitlines()
        assert re.fullmatch(
            rf"commit horizon: held by pid {idle.info.backend_pid} \(role \S+, database \S+,"
            r" application 'forgotten session', idle in transaction\), its transaction open"
            r" for [\d.]+ s since \S+ \S+: rows committed after it began wait until it ends",
            lines[2]), lines
    assert len(reader.read(3)) == 3
    lines = metro(db, "bridge", "--status").stdout.splitlines()
    assert lines[2] == "commit horizon: no transaction open for 1 s or more holds delivery back"
    assert bridge.terminate() == 0


@pytest.fixture
def bridge_login(server_dsn: str) -> Iterator[str]:
    """A login role that is a member of metro_bridge only, as the README recommends."""
    with login_role(server_dsn, "bridge", "metro_bridge") as name:
        yield name


def test_a_bridge_with_only_metro_bridge_forwards_and_applies(db, conn, stations, kafka,
                                                              kafka_producer, bridge_login,
                                                              start_bridge, topic_reader):
    from kafka_fixtures import skip_inbound_backlog
    conn.execute("INSERT INTO cards (card_id, balance) VALUES (42, 100)")
    skip_inbound_backlog(db, kafka)
    conn.execute(INSERT_FRAUD)
    reader = topic_reader("FRAUD")
    # Peer authentication admits only the superuser here: every session of the bridge acts
    # as the bridge's login role from its start (SET ROLE), so privileges are the role's.
    bridge = start_bridge(make_conninfo(db, options=f"-c role={bridge_login}"))
    bridge.wait_for_output("consuming TRAINTOPIC, RECHARGE")
    assert len(reader.read(3)) == 3
    # A recharge made long ago reaches the bridge late: it is applied with its own time.
    kafka_producer.send("RECHARGE", b"42,2000,3,2026-11-02T08:05:00Z", partition=0).get(10)
    wait_until(lambda: conn.execute("SELECT balance FROM cards").fetchone() == (2100,), 30,
               "the recharge applied")
    assert conn.execute("SELECT holder, lease_pid IS NOT NULL FROM bridge_state").fetchone() == (
        f"{socket.gethostname()}:{bridge.process.pid}", True)
    assert bridge.terminate() == 0
    assert "Traceback" not in bridge.output()

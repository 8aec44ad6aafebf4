"""metro worker: one worker works under a lease only metro_worker can take; killed with
kill -9 in the middle of a backlog, the next worker resumes from the rollup's cursors and
nothing is lost or counted twice."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from commands import METRO, run_metro
from factories import catch_up
from psycopg import sql
from test_history import (
    CARD_HISTORY,
    CARD_HISTORY_RECOMPUTED,
    STATION_STATS,
    STATION_STATS_RECOMPUTED,
)
from test_partitions import INSERT_OLD_DECISIONS

from metro import horizon, schema
from metro.worker.runner import Worker, WorkerOptions, run_once


def start_worker(dsn: str, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["METRO_DATABASE_URL"] = dsn
    return subprocess.Popen([*METRO, "worker", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@contextlib.contextmanager
def worker_thread(dsn: str) -> Iterator[list[str]]:
    """A worker in a thread of the test, stopped on leaving; yields what it says."""
    stop = threading.Event()
    said: list[str] = []
    worker = Worker(WorkerOptions(dsn=dsn, holder="host:a", idle_interval=0.05, heartbeat=0.2),
                    stop, said.append)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        yield said
    finally:
        stop.set()
        thread.join(timeout=20)


def rolled_up(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT rolled_up FROM worker_cursors WHERE source = 'card_events'"
                           ).fetchone()
        assert row is not None
        return int(row[0])


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


INSERT_EVENTS = """
    INSERT INTO card_events (card_id, ts, station_id, activity_code, amount, accept)
    SELECT n %% 500, timestamptz '2026-11-02 08:00+00' + n * interval '10 ms' + %s * interval '1 h',
           1 + n %% 15, 1, 250, 1
    FROM generate_series(1, %s) n"""


def test_killed_in_the_middle_of_a_backlog_loses_and_double_counts_nothing(db, conn, stations):
    for batch in range(6):  # six transactions of 5,000 events
        conn.execute(INSERT_EVENTS, (batch, 5000))
    first = start_worker(db, "--batch-size", "200", "--lease", "1")
    try:
        wait_for(lambda: rolled_up(db) >= 3000)
        first.send_signal(signal.SIGKILL)
    finally:
        first.kill()
        first.communicate(timeout=10)
    at_kill = rolled_up(db)
    assert 3000 <= at_kill < 30_000
    second = start_worker(db, "--batch-size", "5000", "--lease", "1")
    try:
        wait_for(lambda: rolled_up(db) == 30_000)
        second.send_signal(signal.SIGTERM)
        output, _ = second.communicate(timeout=20)
    finally:
        second.kill()
        second.communicate(timeout=10)
    assert second.returncode == 0
    assert " INFO metro.worker: holding the lease as " in output
    assert output.rstrip().endswith("INFO metro.worker: stopped")
    assert conn.execute(CARD_HISTORY).fetchall() == conn.execute(CARD_HISTORY_RECOMPUTED).fetchall()
    assert conn.execute(STATION_STATS).fetchall() == conn.execute(
        STATION_STATS_RECOMPUTED).fetchall()
    assert conn.execute("SELECT sum(swipes) FROM card_history_second").fetchone() == (30_000,)


def test_one_worker_works_the_others_wait(db, conn, stations):
    stop = threading.Event()
    said: dict[str, list[str]] = {"a": [], "b": []}
    workers = {name: Worker(WorkerOptions(dsn=db, holder=f"host:{name}", idle_interval=0.05,
                                          heartbeat=0.2, lease_retry=0.1),
                            stop, said[name].append) for name in ("a", "b")}
    threads = {name: threading.Thread(target=w.run) for name, w in workers.items()}
    try:
        threads["a"].start()
        wait_for(lambda: any("holding the lease" in line for line in said["a"]))
        threads["b"].start()
        wait_for(lambda: said["b"] == ["waiting for the lease held by host:a"])
        conn.execute(INSERT_EVENTS, (0, 1000))
        wait_for(lambda: rolled_up(db) == 1000)
        assert workers["a"].rolled_up == 1000 and workers["b"].rolled_up == 0
        # The status names the holder; a clean stop gives the lease up at once.
        status = run_metro("worker", "--status", dsn=db)
        assert status.returncode == 0, status.stderr
        assert status.stdout.startswith("lease: held by host:a since ")
        shown = status.stdout.splitlines()
        assert shown[1] == ("commit horizon: no transaction open for 1 s or more holds the"
                            " rollup back")
        table = [line.split() for line in shown[shown.index("") + 1:]]
        sources = {fields[0]: fields for fields in table[1:]}
        assert table[0][:3] == ["source", "rolled", "up"]
        assert sources["card_events"][1] == "1,000" and sources["card_events"][-2:] == ["0", "-"]
        assert sources["transaction_decisions"] == ["transaction_decisions", "0", "-", "0", "-"]
    finally:
        # A failed assertion must not leave the workers running: the run would hang.
        stop.set()
        for thread in threads.values():
            if thread.is_alive():
                thread.join(timeout=20)
    assert said["a"][-1] == "stopped" and said["b"][-1] == "stopped"


def test_workers_of_one_host_and_pid_are_told_apart(db, conn, stations):
    # As two containers on the host's network, each its own pid 1: the same host and
    # pid. Named host:pid alone, both renewed one lease and both worked.
    stop = threading.Event()
    said: list[list[str]] = [[], []]
    workers = [Worker(WorkerOptions(dsn=db, idle_interval=0.05, heartbeat=0.2, lease_retry=0.1),
                      stop, said[i].append) for i in range(2)]
    prefix = f"{socket.gethostname()}:{os.getpid()}:"
    assert all(w.options.holder.startswith(prefix) for w in workers)
    assert workers[0].options.holder != workers[1].options.holder
    threads = [threading.Thread(target=w.run) for w in workers]
    try:
        threads[0].start()
        wait_for(lambda: f"holding the lease as {workers[0].options.holder}; rolling up "
                 in " ".join(said[0]))
        threads[1].start()
        wait_for(lambda: said[1] == [f"waiting for the lease held by {workers[0].options.holder}"])
        conn.execute(INSERT_EVENTS, (0, 1000))
        wait_for(lambda: rolled_up(db) == 1000)
        assert workers[0].rolled_up == 1000 and workers[1].rolled_up == 0
    finally:
        stop.set()
        for thread in threads:
            if thread.is_alive():
                thread.join(timeout=20)


def test_a_waiting_worker_takes_over_when_the_holder_stops(db, conn, stations):
    stop_a, stop_b = threading.Event(), threading.Event()
    said_b: list[str] = []
    a = Worker(WorkerOptions(dsn=db, holder="host:a", idle_interval=0.05, heartbeat=0.2),
               stop_a, lambda _: None)
    b = Worker(WorkerOptions(dsn=db, holder="host:b", idle_interval=0.05, heartbeat=0.2,
                             lease_retry=0.1), stop_b, said_b.append)
    ta, tb = threading.Thread(target=a.run), threading.Thread(target=b.run)
    try:
        ta.start()
        wait_for(lambda: conn.execute("SELECT holder FROM worker_state").fetchone()
                 == ("host:a",))
        tb.start()
        wait_for(lambda: bool(said_b))
        stop_a.set()
        ta.join(timeout=20)
        wait_for(lambda: any("holding the lease" in line for line in said_b))
        conn.execute(INSERT_EVENTS, (0, 10))
        wait_for(lambda: rolled_up(db) == 10)
    finally:
        stop_a.set()
        stop_b.set()
        for thread in (ta, tb):
            if thread.is_alive():
                thread.join(timeout=20)


@pytest.mark.parametrize("role", ["metro_app", "metro_reader", "metro_bridge"])
def test_only_metro_worker_takes_the_lease_or_runs_the_rollup(db, role):
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(f"SET ROLE {role}")
        for statement in ("SELECT * FROM worker_take_lease('x:1', '15 s')",
                          "SELECT * FROM run_rollup(10)", "SELECT * FROM run_maintenance()",
                          "UPDATE worker_state SET holder = 'x:1'",
                          "SELECT pg_advisory_lock(1)"):  # an advisory lock is no lease
            if statement.startswith("SELECT pg_advisory"):
                conn.execute(statement)
                continue
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
        conn.execute("SET ROLE metro_worker")
        assert conn.execute("SELECT held FROM worker_take_lease('x:1', '15 s')"
                            ).fetchone() == (True,)
        assert conn.execute("SELECT held, lease_holder FROM worker_take_lease('x:2', '15 s')"
                            ).fetchone() == (False, "x:1")
        assert conn.execute("SELECT worker_release_lease('x:1')").fetchone() == (True,)
        assert conn.execute("SELECT held FROM worker_take_lease('x:2', '15 s')"
                            ).fetchone() == (True,)


@pytest.mark.parametrize(("holder", "lease", "sqlstate", "message"), [
    (None, "15 s", "MT004", "worker_take_lease: holder must not be NULL"),
    ("  ", "15 s", "22023", 'worker_take_lease: holder must be 1 to 200 characters, not blank,'
                            ' got "  "'),
    ("x:1", "2 hours", "22023",
     "worker_take_lease: lease must be between 1 second and 1 hour, got 02:00:00"),
])
def test_bad_lease_arguments_change_nothing(conn, holder, lease, sqlstate, message):
    before = conn.execute("SELECT * FROM worker_state").fetchall()
    with pytest.raises(psycopg.Error) as raised:
        conn.execute("SELECT * FROM worker_take_lease(%s, %s::interval)", (holder, lease))
    assert (raised.value.sqlstate, raised.value.diag.message_primary) == (sqlstate, message)
    assert raised.value.diag.message_hint
    assert conn.execute("SELECT * FROM worker_state").fetchall() == before


def test_a_pass_asked_to_stop_ends_after_its_round_and_leaves_maintenance_out(db, conn,
                                                                              stations):
    # The demo's last pass: its signal handler raises nothing, so a Ctrl-C during a big
    # backlog waited for all of it and for maintenance.
    conn.execute(INSERT_EVENTS, (0, 25_000))
    asked: list[int] = []
    done = run_once(db, batch_size=10_000, stop=lambda: asked.append(1) is None)
    assert (done.rolled_up["card_events"], done.maintenance, len(asked)) == (10_000, None, 1)
    rest = run_once(db, batch_size=10_000)
    assert rest.rolled_up["card_events"] == 15_000 and rest.maintenance
    assert conn.execute("SELECT sum(swipes) FROM card_history_second").fetchone() == (25_000,)


def test_once_rolls_everything_up_and_runs_maintenance(db, conn, stations):
    conn.execute(INSERT_EVENTS, (0, 25_000))
    done = run_once(db, batch_size=10_000)
    assert done.rolled_up == {"card_events": 25_000, "card_alert_export": 0, "train_events": 0,
                              "transaction_decisions": 0}
    assert done.maintenance and {a for a, *_ in done.maintenance} == {"created"}
    catch_up(conn)
    assert conn.execute("SELECT sum(pending) FROM worker_lag()").fetchone() == (0,)
    shown = run_metro("worker", "--once", dsn=db)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == ("rolled up: card_alert_export 0, card_events 0, train_events 0,"
                            " transaction_decisions 0\n")


def test_the_worker_deletes_a_backlog_of_expired_decisions_a_batch_at_a_time(db, conn,
                                                                             default_retention):
    conn.execute(INSERT_OLD_DECISIONS, (100_001,))
    with worker_thread(db) as said:
        # The second batch follows the first at once, not after the 10-minute interval.
        wait_for(lambda: conn.execute("SELECT count(*) FROM risk_decisions").fetchone() == (0,))
    assert [line for line in said if "risk_decisions" in line] == [
        "deleted 100,000 rows of risk_decisions past retention",
        "deleted 1 row of risk_decisions past retention"]


@pytest.mark.parametrize("command", [("worker", "--status"), ("worker", "--once"),
                                     ("bridge", "--status")])
def test_commands_on_a_database_without_the_schema_say_to_install(empty_db, command):
    result = run_metro(*command, dsn=empty_db("bare"))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "metro: the database has no metro schema: run `metro install` first\n"


@pytest.mark.parametrize("service", ["worker", "bridge"])
def test_a_service_pointed_at_a_missing_database_stops_at_once(db, service):
    # A typo in the URL is no outage: retried, it would log a warning every few seconds
    # for ever.
    missing = psycopg.conninfo.make_conninfo(db, dbname="metro_no_such_database")
    started = time.monotonic()
    result = run_metro(service, dsn=missing)
    assert time.monotonic() - started < 30
    assert (result.returncode, result.stdout) == (2, "")
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("metro: cannot connect to PostgreSQL: ")
    assert last.endswith('database "metro_no_such_database" does not exist; check'
                         " METRO_DATABASE_URL")


def test_a_lease_outside_what_the_database_takes_is_refused_by_the_options(db):
    result = run_metro("worker", "--lease", "0.1", dsn=db)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].endswith(
        "argument --lease: must be from 1 to 3600: 0.1")


def test_the_status_names_the_transaction_that_holds_the_rollup_back(db, conn, stations):
    # --once left rows pending, and nothing said why.
    with psycopg.connect(db) as idle:
        idle.execute("SELECT pg_current_xact_id()")  # an open transaction with an id
        pid = idle.info.backend_pid
        conn.execute(INSERT_EVENTS, (0, 10))
        run_metro("worker", "--once", dsn=db)
        time.sleep(horizon.MOMENT_SECONDS)  # a younger transaction is not named
        status = run_metro("worker", "--status", dsn=db)
    assert status.returncode == 0, status.stderr
    held = status.stdout.splitlines()[1]
    assert held.startswith(f"commit horizon: held by pid {pid} (role ")
    assert held.endswith(": rows committed after it began wait until it ends")
    pending = {fields[0]: fields[3] for fields in
               (line.split() for line in status.stdout.splitlines()) if len(fields) > 3}
    assert pending["card_events"] == "10"


def test_the_status_after_once_says_no_worker_held_the_lease(db):
    run_metro("worker", "--once", dsn=db)
    status = run_metro("worker", "--status", dsn=db)
    assert status.stdout.splitlines()[0] == (
        "lease: free (no `metro worker` has held it; --once needs none)")
    assert status.stdout.splitlines()[2].startswith("last maintenance: ")
    assert status.stdout.splitlines()[2].endswith(
        ": created 12, dropped 0, deleted 0 rows, busy 0, not rolled up 0")


def test_a_worker_started_on_a_backlog_rolls_it_up_before_it_drops_its_days(db, conn, stations):
    # Maintenance keeps a day the rollup has not read; run first, it would keep the day
    # for the whole maintenance interval (10 minutes) although the first round reads it.
    day = conn.execute("SELECT (now() AT TIME ZONE 'UTC')::date - 3").fetchone()[0]
    conn.execute("SELECT * FROM run_maintenance()")
    conn.execute("SELECT * FROM create_partitions(%s, %s)", (day, day))
    conn.execute("INSERT INTO card_events (card_id, ts, station_id, activity_code, amount,"
                 " accept) SELECT n, %s::timestamptz + n * interval '1 s', 1, 1, 250, 1"
                 " FROM generate_series(1, 100) n", (day,))
    conn.execute("UPDATE settings SET event_retention = '1 day'")
    with worker_thread(db) as said:
        wait_for(lambda: any("dropped partition" in line for line in said), timeout=20)
    dropped = f"dropped partition card_events_p{day:%Y%m%d} of card_events (past its retention)"
    assert dropped in said
    assert not any("not rolled up" in line for line in said)
    assert conn.execute("SELECT sum(swipes) FROM station_totals").fetchone() == (100,)


def test_commands_on_a_schema_older_than_they_need_say_to_upgrade(empty_db):
    dsn = empty_db("old")
    schema.upgrade(dsn, "0001")
    result = run_metro("worker", "--status", dsn=dsn)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == ("metro: the metro schema here is older than revision 0008, which"
                             " added metro.worker_state: run `metro install` to upgrade it\n")


# The bridge checks the schema before it connects to Kafka: none listens on port 9 here.
@pytest.mark.parametrize("args", [("worker", "--once"),
                                  ("bridge", "--no-inbound", "--kafka", "127.0.0.1:9")])
def test_services_run_only_against_the_revision_they_call(empty_db, args):
    dsn = empty_db("other_revision")
    schema.upgrade(dsn, "0020")
    older = run_metro(*args, dsn=dsn)
    assert (older.returncode, older.stdout) == (2, "")
    assert older.stderr.endswith(f"metro: the metro schema here is older than revision"
                                 f" {schema.head_revision()}, which this metro needs: run"
                                 " `metro install` to upgrade it\n")
    assert run_metro("install", dsn=dsn).returncode == 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE metro.alembic_version SET version_num = '9999'")
    newer = run_metro(*args, dsn=dsn)
    assert (newer.returncode, newer.stdout) == (2, "")
    assert newer.stderr.endswith(
        f"metro: the metro schema here is at revision 9999, which this metro (head"
        f" {schema.head_revision()}) does not know: a newer metro installed it; run that"
        " one's services\n")


def test_a_read_only_database_is_waited_out(db, conn):
    # As a standby is after a failover, until the URL leads to the new primary.
    database = sql.Identifier(psycopg.conninfo.conninfo_to_dict(db)["dbname"])
    conn.execute(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(
        database))
    with worker_thread(db) as said:
        wait_for(lambda: any(line.startswith("PostgreSQL is read-only here") for line in said),
                 timeout=20)
        conn.execute(sql.SQL("ALTER DATABASE {} RESET default_transaction_read_only").format(
            database))
        wait_for(lambda: any(line.startswith("holding the lease") for line in said), timeout=30)
    refusal = next(line for line in said if line.startswith("PostgreSQL is read-only here"))
    assert refusal == (
        "PostgreSQL is read-only here (cannot execute UPDATE in a read-only transaction): a"
        " standby? target_session_attrs=read-write in the URL leads to the primary")

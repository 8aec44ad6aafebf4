"""Old data leaves by partition: run_maintenance() creates the days ahead and drops the days
past retention; days without a partition go to the default partition and leave by their
retention; the fraud rules read one card's index range whatever partitions hold it."""

from __future__ import annotations

import threading
import time
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest
from factories import add_card, call, catch_up, counts

from metro.worker.runner import run_once

# Retention counted from the server's clock, as a deployment has it.
pytestmark = pytest.mark.usefixtures("default_retention")

TABLES = ("card_events", "card_history_second", "station_second_slots")


def today(conn: psycopg.Connection) -> date:
    row = conn.execute("SELECT (now() AT TIME ZONE 'UTC')::date").fetchone()
    assert row is not None
    return row[0]


def partitions(conn: psycopg.Connection, table: str) -> list[str]:
    return [name for (name,) in conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = %s::regclass ORDER BY 1", (f"metro.{table}",))]


def day_name(table: str, day: date) -> str:
    return f"{table}_p{day:%Y%m%d}"


def test_maintenance_creates_the_days_ahead_once(conn):
    day = today(conn)
    done = conn.execute("SELECT * FROM run_maintenance()").fetchall()
    assert done == [("created", table, day_name(table, day + timedelta(days=n)), 0)
                    for table in sorted(TABLES) for n in range(4)]
    assert conn.execute("SELECT * FROM run_maintenance()").fetchall() == []
    assert partitions(conn, "card_events") == [
        "card_events_default",
        *(day_name("card_events", day + timedelta(days=n)) for n in range(4))]
    state = conn.execute("SELECT last_maintenance FROM worker_state").fetchone()
    assert state == ("created 0, dropped 0, deleted 0 rows, busy 0, not rolled up 0",)


def test_a_partition_is_described_by_its_utc_day_whatever_the_callers_settings(conn):
    # A caller's DateStyle and TimeZone change neither the bounds nor the description.
    conn.execute("SET DateStyle = 'SQL, DMY'")
    conn.execute("SET TimeZone = 'America/New_York'")
    day = today(conn) - timedelta(days=1)
    conn.execute("SELECT * FROM create_partitions(%s, %s)", (day, day))
    conn.execute("SET DateStyle = 'ISO, YMD'")
    conn.execute("SET TimeZone = 'UTC'")
    name = day_name("card_events", day)
    assert conn.execute(
        "SELECT obj_description(%s::regclass, 'pg_class'),"
        " pg_get_expr(relpartbound, oid) FROM pg_class WHERE oid = %s::regclass",
        (f"metro.{name}", f"metro.{name}")).fetchone() == (
        f"card_events of {day:%Y-%m-%d} (UTC); dropped by run_maintenance() past its retention",
        f"FOR VALUES FROM ('{day:%Y-%m-%d} 00:00:00+00') TO"
        f" ('{day + timedelta(days=1):%Y-%m-%d} 00:00:00+00')")


def test_days_past_retention_are_dropped_in_well_under_a_second(conn, stations):
    day = today(conn)
    old = day - timedelta(days=40)
    conn.execute("SELECT * FROM run_maintenance()")  # today's partitions
    conn.execute("SELECT * FROM create_partitions(%s, %s)", (old, old))
    add_card(conn, 1, balance=100_000)
    conn.execute(
        "INSERT INTO card_events (card_id, ts, station_id, activity_code, amount, accept)"
        " SELECT 1, %s::timestamptz + n * interval '100 ms', 1, 2, 100, 1"
        " FROM generate_series(1, 50000) n",
        (datetime.combine(old, datetime.min.time(), UTC),))
    catch_up(conn)
    started = time.monotonic()
    done = conn.execute("SELECT * FROM run_maintenance()").fetchall()
    elapsed = time.monotonic() - started
    # card_events keeps 30 days, the history 90.
    assert done == [("dropped", "card_events", day_name("card_events", old), None)]
    assert elapsed < 0.5, elapsed
    assert conn.execute("SELECT count(*) FROM card_events").fetchone() == (0,)
    assert conn.execute("SELECT sum(swipes) FROM card_history_second").fetchone() == (50_000,)
    conn.execute("UPDATE settings SET history_retention = '10 days'")
    assert sorted(conn.execute("SELECT action, table_name FROM run_maintenance()").fetchall()) == [
        ("dropped", "card_history_second"), ("dropped", "station_second_slots")]
    # The counters /metrics exports keep the dropped days: a counter never falls.
    assert conn.execute("SELECT count(*) FROM station_second_slots").fetchone() == (0,)
    assert conn.execute("SELECT swipes, entries, revenue FROM dashboard_totals").fetchone() == (
        50_000, 0, 0)


def test_a_replayed_past_day_goes_to_the_default_partition_and_leaves_by_retention(conn, stations):
    add_card(conn, 1, balance=10_000)
    conn.execute("SELECT * FROM run_maintenance()")
    long_ago = datetime.now(UTC) - timedelta(days=45)
    recent = datetime.now(UTC) - timedelta(days=5)
    assert call(conn, "validate_entry", 1, 1, long_ago)[0] is True
    assert call(conn, "validate_entry", 1, 1, recent)[0] is True
    assert conn.execute("SELECT tableoid::regclass::text, count(*) FROM card_events GROUP BY 1"
                        ).fetchall() == [("card_events_default", 2)]
    catch_up(conn)
    done = conn.execute("SELECT * FROM run_maintenance()").fetchall()
    assert done == [("deleted", "card_events", "card_events_default", 1)]
    assert conn.execute("SELECT ts FROM card_events").fetchall() == [(recent,)]


SWIPES_SINCE_THE_START = "SELECT coalesce(sum(swipes), 0) FROM station_totals"


def test_a_day_the_rollup_has_not_read_stays_past_its_retention(conn, stations):
    # A worker stopped over a weekend: the days past retention hold swipes not yet in
    # the totals. Dropping them would lose those swipes from the counters for good.
    day = today(conn) - timedelta(days=3)
    conn.execute("SELECT * FROM create_partitions(%s, %s)", (day, day))
    conn.execute("INSERT INTO card_events (card_id, ts, station_id, activity_code, amount, accept)"
                 " SELECT n, %s::timestamptz + n * interval '1 s', 1, 1, 250, 1"
                 " FROM generate_series(1, 1000) n",
                 (datetime.combine(day, datetime.min.time(), UTC),))
    conn.execute("UPDATE settings SET event_retention = '1 day'")
    done = conn.execute("SELECT * FROM run_maintenance() WHERE table_name = 'card_events'"
                        " AND action <> 'created'").fetchall()
    assert done == [("not_rolled_up", "card_events", day_name("card_events", day), None)]
    assert conn.execute("SELECT count(*) FROM card_events").fetchone() == (1000,)
    assert conn.execute("SELECT last_maintenance FROM worker_state").fetchone()[0].endswith(
        "not rolled up 1")
    catch_up(conn)
    done = conn.execute("SELECT * FROM run_maintenance() WHERE table_name = 'card_events'"
                        ).fetchall()
    assert done == [("dropped", "card_events", day_name("card_events", day), None)]
    assert conn.execute(SWIPES_SINCE_THE_START).fetchone() == (1000,)


def test_default_partition_rows_the_rollup_has_not_read_stay(conn, stations):
    conn.execute("SELECT * FROM run_maintenance()")
    conn.execute(INSERT_OLD_DEFAULT_EVENTS, (3,))
    catch_up(conn)
    conn.execute(INSERT_OLD_DEFAULT_EVENTS, (2,))  # after the rollup's last round
    deleted = "SELECT * FROM run_maintenance() WHERE action = 'deleted'"
    assert conn.execute(deleted).fetchall() == [
        ("deleted", "card_events", "card_events_default", 3)]
    assert conn.execute("SELECT count(*) FROM card_events").fetchone() == (2,)
    catch_up(conn)
    assert conn.execute(deleted).fetchall() == [
        ("deleted", "card_events", "card_events_default", 2)]
    assert conn.execute(SWIPES_SINCE_THE_START).fetchone() == (5,)


def test_two_callers_of_create_partitions_queue_instead_of_failing(db, conn):
    # Two installs at once, or a worker and pg_cron: both would find the day missing.
    day = today(conn) - timedelta(days=10)
    with psycopg.connect(db) as first, psycopg.connect(db, autocommit=True) as second:
        assert len(first.execute("SELECT * FROM metro.create_partitions(%s, %s)",
                                 (day, day)).fetchall()) == 3
        result: list[object] = []
        waiting = threading.Thread(target=lambda: result.append(second.execute(
            "SELECT * FROM metro.create_partitions(%s, %s)", (day, day)).fetchall()))
        waiting.start()
        waiting.join(1.0)
        assert waiting.is_alive()  # queued behind the first
        first.commit()
        waiting.join(10)
    assert result == [[]]
    assert day_name("card_events", day) in partitions(conn, "card_events")


def test_a_table_held_by_a_long_transaction_is_left_busy_without_stalling_the_gates(
        db, conn, stations):
    """Creating or dropping a partition locks its table exclusively; a transaction reading
    card_events (a report, a client holding its transaction open) holds it off, and every
    swipe queues behind the wait. Each waits 200 ms at most and is reported busy: before,
    a creation failed run_maintenance() whole after 2 s (its drops and deletes undone),
    and create_partitions() called directly waited as long as the reader, and so did the
    swipes."""
    add_card(conn, 1, balance=10_000)
    day = today(conn)
    ahead, old, backfill = (day + timedelta(days=3), day - timedelta(days=40),
                            day - timedelta(days=10))
    conn.execute("SELECT * FROM run_maintenance()")
    conn.execute("SELECT * FROM create_partitions(%s, %s)", (old, old))
    conn.execute(f"DROP TABLE {day_name('card_events', ahead)}")
    conn.execute("INSERT INTO bridge_dead_letters (topic, kafka_partition, kafka_offset, reason,"
                 " received_at) VALUES ('RECHARGE', 0, 1, 'old', now() - interval '31 days')")
    with psycopg.connect(db) as reader, psycopg.connect(db, autocommit=True) as gate:
        reader.execute("SELECT metro.is_fraud(1, 1)")  # its transaction stays open
        swipe: list[float] = []

        def swipe_meanwhile() -> None:
            time.sleep(0.05)
            started = time.monotonic()
            gate.execute("SELECT metro.validate_entry(1, 1)")
            swipe.append(time.monotonic() - started)

        thread = threading.Thread(target=swipe_meanwhile)
        thread.start()
        done = conn.execute("SELECT * FROM run_maintenance()").fetchall()
        thread.join(10)
        # The deletes first: a partition created or dropped keeps its table locked until
        # the call commits.
        assert done == [("deleted", "bridge_dead_letters", None, 1),
                        ("busy", "card_events", day_name("card_events", ahead), None),
                        ("busy", "card_events", day_name("card_events", old), None)]
        assert swipe and swipe[0] < 1.0, swipe
        assert conn.execute("SELECT last_maintenance FROM worker_state").fetchone() == (
            "created 0, dropped 0, deleted 1 rows, busy 2, not rolled up 0",)
        assert conn.execute("SELECT action, table_name FROM create_partitions(%s, %s)",
                            (backfill, backfill)).fetchall() == [
            ("busy", "card_events"), ("created", "card_history_second"),
            ("created", "station_second_slots")]
        reader.commit()
    assert conn.execute("SELECT * FROM run_maintenance()").fetchall() == [
        ("created", "card_events", day_name("card_events", ahead), 0),
        ("dropped", "card_events", day_name("card_events", old), None)]
    assert conn.execute("SELECT action FROM create_partitions(%s, %s)",
                        (backfill, backfill)).fetchall() == [("created",)]


def test_create_partitions_for_a_backfill_and_a_day_already_in_the_default(conn, stations):
    add_card(conn, 1, balance=10_000)
    day = today(conn) - timedelta(days=3)
    call(conn, "validate_entry", 1, 1, datetime.combine(day, datetime.min.time(), UTC))
    done = conn.execute("SELECT action, table_name, partition_name FROM create_partitions(%s, %s)",
                        (day, day + timedelta(days=1))).fetchall()
    assert done == [
        ("kept_in_default", "card_events", "card_events_default"),
        ("created", "card_events", day_name("card_events", day + timedelta(days=1))),
        ("created", "card_history_second", day_name("card_history_second", day)),
        ("created", "card_history_second",
         day_name("card_history_second", day + timedelta(days=1))),
        ("created", "station_second_slots", day_name("station_second_slots", day)),
        ("created", "station_second_slots",
         day_name("station_second_slots", day + timedelta(days=1)))]
    catch_up(conn)
    assert conn.execute("SELECT tableoid::regclass::text FROM card_history_second").fetchall() == [
        (day_name("card_history_second", day),)]


@pytest.mark.parametrize(("args", "sqlstate", "message"), [
    ((None, "2026-01-01"), "MT004", "create_partitions: from_day must not be NULL"),
    (("2026-02-01", "2026-01-01"), "22023",
     "create_partitions: days 2026-02-01 to 2026-01-01 are not a range of at most 10 years"
     " within 2000-01-01 and 2200-01-01"),
    (("infinity", "infinity"), "22023",
     "create_partitions: days infinity to infinity are not a range of at most 10 years"
     " within 2000-01-01 and 2200-01-01"),
])
def test_bad_partition_ranges_create_nothing(conn, args, sqlstate, message):
    before = partitions(conn, "card_events")
    with pytest.raises(psycopg.Error) as raised:
        conn.execute("SELECT * FROM create_partitions(%s::date, %s::date)", args)
    assert (raised.value.sqlstate, raised.value.diag.message_primary) == (sqlstate, message)
    assert partitions(conn, "card_events") == before


@pytest.mark.parametrize("days", [(-91, -91), (-5, 4), (1000, 3999)])
def test_only_days_rows_are_kept_for_get_partitions(conn, days):
    # Every swipe's rules lock every partition: a worker's role creating years of days
    # ahead (never dropped) or long past would slow every swipe, then fail them all.
    day = today(conn)
    first, last = (day + timedelta(days=n) for n in days)
    before = partitions(conn, "card_events")
    with pytest.raises(psycopg.Error) as raised:
        conn.execute("SELECT * FROM create_partitions(%s, %s)", (first, last))
    assert raised.value.sqlstate == "22023"
    assert raised.value.diag.message_primary == (
        f"create_partitions: days {first} to {last} reach outside the days kept,"
        f" {day - timedelta(days=90)} to {day + timedelta(days=3)}")
    assert partitions(conn, "card_events") == before


def test_dead_letters_past_retention_are_deleted(conn):
    conn.execute("INSERT INTO bridge_dead_letters (topic, kafka_partition, kafka_offset, reason,"
                 " received_at) VALUES ('RECHARGE', 0, 1, 'old', now() - interval '31 days'),"
                 " ('RECHARGE', 0, 2, 'new', now() - interval '29 days')")
    conn.execute("INSERT INTO bridge_outbound_dead_letters (stream, position, txid, reason, at)"
                 " VALUES ('fraud', 1, '5', 'old', now() - interval '31 days'),"
                 " ('fraud', 2, '6', 'old', now() - interval '30 days 1 second'),"
                 " ('fraud', 3, '7', 'new', now() - interval '29 days')")
    done = conn.execute("SELECT * FROM run_maintenance() WHERE action = 'deleted'").fetchall()
    assert done == [("deleted", "bridge_dead_letters", None, 1),
                    ("deleted", "bridge_outbound_dead_letters", None, 2)]
    assert conn.execute("SELECT reason FROM bridge_dead_letters").fetchall() == [("new",)]
    assert conn.execute("SELECT position FROM bridge_outbound_dead_letters").fetchall() == [(3,)]


def test_train_events_and_departures_leave_with_the_history_once_rolled_up(conn, stations):
    old, recent = [row[0] for row in conn.execute(
        "SELECT now() - n * interval '1 day' FROM unnest(ARRAY[91, 89]) n")]
    for ts in (old, recent):
        conn.execute("SELECT record_train_event(1, 4, 1, %s)", (ts,))
    trains = "SELECT ts FROM train_events ORDER BY ts"
    # Not rolled up yet: the old departure has not been computed, so its event stays.
    done = conn.execute("SELECT * FROM run_maintenance() WHERE action = 'deleted'").fetchall()
    assert done == []
    assert [ts for (ts,) in conn.execute(trains)] == [old, recent]
    catch_up(conn)
    assert conn.execute("SELECT count(*) FROM station_departures").fetchone() == (2,)
    done = conn.execute("SELECT * FROM run_maintenance() WHERE action = 'deleted'").fetchall()
    assert done == [("deleted", "station_departures", None, 1),
                    ("deleted", "train_events", None, 1)]
    assert [ts for (ts,) in conn.execute(trains)] == [recent]
    assert conn.execute("SELECT ts FROM station_departures").fetchall() == [(recent,)]


INSERT_OLD_DECISIONS = (
    "INSERT INTO risk_decisions (transaction_id, account_id, amount, ts, risk_level, blocked,"
    " rule, message, decided_at)"
    " SELECT 'old-' || n, 'a1', 1, now() - interval '31 days', 1, false, 'default_pass',"
    " 'Approved', now() - interval '31 days' + n * interval '1 ms' FROM generate_series(1, %s) n")


def test_decisions_past_retention_are_deleted_and_their_ids_decided_afresh(conn):
    conn.execute(INSERT_OLD_DECISIONS, (2,))
    assert conn.execute("SELECT * FROM evaluate_transaction('new-1', 'a1', 1.00)").fetchone() == (
        False, "default_pass", "Approved")
    done = conn.execute("SELECT * FROM run_maintenance() WHERE table_name = 'risk_decisions'"
                        ).fetchall()
    assert done == [("deleted", "risk_decisions", None, 2)]
    assert conn.execute("SELECT transaction_id FROM risk_decisions").fetchall() == [("new-1",)]
    # Past retention a transaction_id is no longer known: it is decided again.
    assert conn.execute("SELECT * FROM evaluate_transaction('old-1', 'a1', 7.00)").fetchone() == (
        False, "default_pass", "Approved")
    assert conn.execute("SELECT amount FROM risk_decisions WHERE transaction_id = 'old-1'"
                        ).fetchone() == (7,)


def test_decision_retention_of_less_than_a_day_is_refused(conn):
    with pytest.raises(psycopg.errors.CheckViolation) as raised:
        conn.execute("UPDATE settings SET decision_retention = '23 hours'")
    assert raised.value.diag.constraint_name == "settings_decision_retention_check"
    assert conn.execute("SELECT decision_retention FROM settings").fetchone() == (
        timedelta(days=30),)


def test_a_large_backlog_of_decisions_leaves_a_batch_per_call(db, conn):
    conn.execute(INSERT_OLD_DECISIONS, (200_001,))
    conn.commit()
    done = conn.execute("SELECT * FROM run_maintenance() WHERE table_name = 'risk_decisions'"
                        ).fetchall()
    assert done == [("deleted", "risk_decisions", None, 100_000),
                    ("more", "risk_decisions", None, None)]
    conn.commit()
    # `metro worker --once` calls again while more is due, each call its own transaction.
    assert [row for row in run_once(db).maintenance or [] if row[1] == "risk_decisions"] == [
        ("deleted", "risk_decisions", None, 100_000), ("deleted", "risk_decisions", None, 1)]
    assert conn.execute("SELECT count(*) FROM risk_decisions").fetchone() == (0,)


INSERT_OLD_DEAD_LETTERS = (
    "INSERT INTO bridge_dead_letters (topic, kafka_partition, kafka_offset, reason, received_at)"
    " SELECT 'RECHARGE', 0, n, 'not JSON', now() - interval '31 days'"
    " FROM generate_series(1, %s) n")
INSERT_OLD_DEFAULT_EVENTS = (
    "INSERT INTO card_events (card_id, ts, station_id, activity_code, amount, accept)"
    " SELECT n, now() - interval '40 days', 1, 1, 0, 0 FROM generate_series(1, %s) n")


def test_every_table_shares_one_budget_of_rows_a_call(db, conn, stations):
    # A month replayed into a default partition, or a flood of dead letters, must not
    # become one DELETE of millions of rows: it would hold back the commit horizon,
    # and the bridge and the rollup with it, for as long as it ran.
    conn.execute("SELECT * FROM run_maintenance()")  # today's partitions
    conn.execute(INSERT_OLD_DEAD_LETTERS, (70_000,))
    conn.execute(INSERT_OLD_DEFAULT_EVENTS, (30_001,))
    catch_up(conn)
    deleted = "SELECT * FROM run_maintenance() WHERE action IN ('deleted', 'more')"
    assert conn.execute(deleted).fetchall() == [
        ("deleted", "bridge_dead_letters", None, 70_000),
        ("deleted", "card_events", "card_events_default", 30_000),
        ("more", "card_events", "card_events_default", None)]
    assert conn.execute("SELECT count(*) FROM card_events_default").fetchone() == (1,)
    assert conn.execute(deleted).fetchall() == [
        ("deleted", "card_events", "card_events_default", 1)]
    assert conn.execute("SELECT count(*) FROM bridge_dead_letters").fetchone() == (0,)


def test_run_maintenance_until_done_commits_each_batch(db, conn):
    # What pg_cron calls: run_maintenance() again while more is due.
    conn.execute(INSERT_OLD_DECISIONS, (200_001,))
    # Inside a transaction block it cannot commit between batches: refused, nothing deleted.
    with (pytest.raises(psycopg.errors.InvalidTransactionTermination) as raised,
          conn.transaction()):
        conn.execute("SET LOCAL ROLE metro_worker")
        conn.execute("CALL run_maintenance_until_done()")
    assert str(raised.value).startswith("invalid transaction termination")
    assert conn.execute("SELECT count(*) FROM risk_decisions").fetchone() == (200_001,)
    conn.execute("SET ROLE metro_worker")
    conn.execute("CALL run_maintenance_until_done()")
    conn.execute("RESET ROLE")
    assert conn.execute("SELECT count(*) FROM risk_decisions").fetchone() == (0,)
    assert conn.execute("SELECT last_maintenance FROM worker_state").fetchone() == (
        "created 0, dropped 0, deleted 1 rows, busy 0, not rolled up 0",)


def test_fraud_rules_across_midnight_and_partitions(conn, stations):
    """Rule 2 counts entries in [ts - 1 hour, ts) whichever daily partitions hold them."""
    conn.execute("SELECT * FROM run_maintenance()")
    midnight = datetime.combine(today(conn) + timedelta(days=1), datetime.min.time(), UTC)
    add_card(conn, 1, balance=100_000)
    for n, station in enumerate((1, 2, 3, 4, 5)):
        assert call(conn, "validate_entry", 1, station,
                    midnight + timedelta(minutes=10 * n - 30))[0] is True
    assert conn.execute("SELECT count(DISTINCT tableoid) FROM card_events").fetchone() == (2,)
    assert call(conn, "validate_entry", 1, 6, midnight + timedelta(minutes=15)) == (
        False, "Fraudulent transaction")
    before = counts(conn)
    assert call(conn, "is_fraud", 1, 6, midnight + timedelta(minutes=16)) == (True,)
    assert counts(conn) == before


# The functions whose generic plans never scan a partition whole, with arguments for a call.
GATES = [("validate_entry", (7, 1)), ("process_exit", (7, 2)), ("is_fraud", (7, 1)),
         ("validate_entries", ([7, 8], [1, 1]))]


@pytest.mark.parametrize("function, args", GATES)
def test_a_partition_analyzed_empty_is_never_scanned_whole(db, conn, stations, function, args):
    # Just analyzed, today's partition says it holds nothing: a generic plan made
    # now would scan it whole on every call for the rest of the session, however
    # many rows it gets. A new session makes its plans now, and must use the index.
    add_card(conn, 7)
    add_card(conn, 8)
    conn.commit()
    conn.execute("ANALYZE card_events")
    conn.commit()
    with psycopg.connect(db) as gate:
        placeholders = ", ".join(["%s"] * len(args))
        gate.execute(f"SELECT * FROM metro.{function}({placeholders})", args).fetchall()
        row = gate.execute(
            "SELECT sum(pg_stat_get_xact_numscans(i.inhrelid)) FROM pg_inherits i"
            " WHERE i.inhparent = 'metro.card_events'::regclass").fetchone()
    assert row == (0,)


@pytest.mark.parametrize("function, args", GATES)
def test_a_gate_never_compiles_its_statements(conn, stations, function, args):
    # Before PostgreSQL 18 a disabled sequential scan is costed 10^10, over
    # jit_above_cost: a server built with JIT compiled every statement of every swipe
    # (90 ms a call on PostgreSQL 15). Each gate turns JIT off for itself.
    row = conn.execute("SELECT proconfig FROM pg_proc WHERE oid = to_regproc(%s)",
                       (f"metro.{function}",)).fetchone()
    assert row is not None and "jit=off" in row[0]
    if conn.execute("SELECT pg_jit_available()").fetchone() != (True,):
        return  # This server cannot compile: the setting is all there is to check.
    add_card(conn, 7)
    add_card(conn, 8)
    plans: list[str] = []
    conn.add_notice_handler(lambda notice: plans.append(notice.message_primary or ""))
    for setting in ("jit = on", "jit_above_cost = 0", "client_min_messages = log",
                    "auto_explain.log_min_duration = 0",
                    "auto_explain.log_nested_statements = on"):
        conn.execute(f"SET {setting}")
    conn.execute("LOAD 'auto_explain'")
    placeholders = ", ".join(["%s"] * len(args))
    conn.execute(f"SELECT * FROM {function}({placeholders})", args).fetchall()
    nested = [plan for plan in plans if "Query Text: SELECT * FROM" not in plan]
    assert nested and not [plan for plan in nested if "JIT:" in plan]


def test_an_exit_after_a_recent_entry_reads_no_older_day(db, conn, stations):
    # process_exit reads the last day first: the days before yesterday are not read
    # (over all of history, the plan read the newest entries of every day's partition).
    day = today(conn)
    conn.execute("SELECT * FROM create_partitions(%s, %s)", (day - timedelta(days=5), day))
    conn.execute("SELECT * FROM run_maintenance()")
    add_card(conn, 7)
    noon = datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=12)
    call(conn, "validate_entry", 7, 1, noon - timedelta(hours=1))
    conn.commit()
    with psycopg.connect(db) as gate:
        assert call(gate, "process_exit", 7, 2, noon) == (True, "Exit recorded")
        read = {name for (name,) in gate.execute(
            "SELECT relname FROM pg_stat_xact_user_tables"
            " WHERE relname LIKE 'card\\_events\\_p%%' AND idx_scan > 0")}
    assert day_name("card_events", day) in read
    older = {day_name("card_events", day - timedelta(days=n)) for n in range(2, 6)}
    assert older <= set(partitions(conn, "card_events"))
    assert not read & older


def test_the_rules_plan_opens_only_the_partition_of_the_window(conn, stations):
    # validate_entry passes the thresholds as parameters, so the generic plan of the
    # rules' read drops every other partition, the default one included, when it starts
    # (a threshold read inside the query left the default partition in the plan).
    conn.execute("SELECT * FROM run_maintenance()")
    assert len(partitions(conn, "card_events")) >= 3
    conn.execute("SET plan_cache_mode = force_generic_plan")
    conn.execute("PREPARE rules(bigint, timestamptz, interval, integer, integer) AS"
                 " SELECT rule FROM fraud_rule($1, $2, $3, $4, $5)")
    noon = datetime.combine(today(conn), datetime.min.time(), UTC) + timedelta(hours=12)
    row = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON)"
                       f" EXECUTE rules(7, '{noon.isoformat()}', '1 hour', 10, 5)").fetchone()
    assert row is not None

    def scanned(plan: dict) -> list[str]:
        own = [plan["Relation Name"]] if "Relation Name" in plan else []
        return own + [name for child in plan.get("Plans", []) for name in scanned(child)]

    assert scanned(row[0][0]["Plan"]) == [day_name("card_events", today(conn))]

"""Derived data equals a recomputation from its sources once the rollup has caught up,
whoever wrote the sources (single calls, batches, COPY, plain INSERT), and no session
setting changes a decision or skips a record."""

from datetime import timedelta

import psycopg
import pytest
from factories import add_card, at, catch_up
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

CARD_HISTORY = """
    SELECT card_id, second_start, swipes FROM card_history_second
    ORDER BY card_id, second_start"""
CARD_HISTORY_RECOMPUTED = """
    SELECT card_id, date_trunc('second', ts), count(*)::integer FROM card_events
    GROUP BY 1, 2 ORDER BY 1, 2"""
STATION_STATS = """
    SELECT station_id, second_start, swipes, entries, accepted, rejected, fraud, revenue
    FROM station_second_stats ORDER BY station_id, second_start"""
STATION_STATS_RECOMPUTED = """
    SELECT station_id, date_trunc('second', ts), count(*)::integer,
           count(*) FILTER (WHERE activity_code = 1)::integer,
           count(*) FILTER (WHERE activity_code = 1 AND accept = 1)::integer,
           count(*) FILTER (WHERE activity_code = 1 AND accept = 0)::integer,
           count(*) FILTER (WHERE activity_code = 1 AND accept = -1)::integer,
           coalesce(sum(amount) FILTER (WHERE activity_code = 1 AND accept = 1), 0)::bigint
    FROM card_events GROUP BY 1, 2 ORDER BY 1, 2"""

# Every event rolled up, per station: the lifetime counters /metrics exports.
STATION_TOTALS = """
    SELECT station_id, swipes, entries, accepted, rejected, fraud, revenue
    FROM station_totals ORDER BY station_id"""
STATION_TOTALS_RECOMPUTED = f"""
    SELECT station_id, sum(swipes)::bigint, sum(entries)::bigint, sum(accepted)::bigint,
           sum(rejected)::bigint, sum(fraud)::bigint, sum(revenue)::bigint
    FROM ({STATION_STATS_RECOMPUTED.replace("ORDER BY 1, 2", "")}) s(station_id, second_start,
          swipes, entries, accepted, rejected, fraud, revenue)
    GROUP BY 1 ORDER BY 1"""

EXPORT_STATS = "SELECT card_id, station_name, alerts FROM card_export_stats ORDER BY 1, 2"
EXPORT_STATS_RECOMPUTED = """
    SELECT card_id, station_name, count(*)::integer FROM card_alert_export
    GROUP BY 1, 2 ORDER BY 1, 2"""
PAYMENTS = "SELECT blocked, payments FROM payment_totals ORDER BY 1"
PAYMENTS_RECOMPUTED = "SELECT blocked, count(*) FROM risk_decisions GROUP BY 1 ORDER BY 1"
DEPARTURES = """
    SELECT station_id, train_id, ts, riders, wait_seconds FROM station_departures
    ORDER BY 1, 3, 2"""
# A departure: the accepted entries since the previous departure from its station (at
# most max_wait back), in one-second buckets, each waiting until the departure.
DEPARTURES_RECOMPUTED = """
    SELECT d.station_id, d.train_id, d.ts, count(e.*)::integer,
           coalesce(sum(extract(epoch FROM d.ts - date_trunc('second', e.ts))::numeric), 0)
    FROM train_events d
    CROSS JOIN settings s
    CROSS JOIN LATERAL (
        SELECT greatest(max(p.ts), d.ts - s.max_wait) AS since FROM train_events p
        WHERE p.station_id = d.station_id AND p.activity_type = 1 AND p.ts < d.ts) prev
    LEFT JOIN card_events e
        ON e.station_id = d.station_id AND e.activity_code = 1 AND e.accept = 1
       AND date_trunc('second', e.ts) > date_trunc('second', prev.since)
       AND date_trunc('second', e.ts) <= d.ts
    WHERE d.activity_type = 1
    GROUP BY d.station_id, d.train_id, d.ts ORDER BY 1, 3, 2"""

operation = st.tuples(
    st.sampled_from(["validate_entry", "process_exit", "recharge_card", "bulk_insert",
                     "validate_entries", "copy", "depart", "payment"]),
    st.integers(min_value=1, max_value=7),          # cards 1-5 exist, 6-7 are unknown
    st.integers(min_value=1, max_value=15),         # station
    st.integers(min_value=0, max_value=8_000),      # milliseconds after T0
    st.integers(min_value=0, max_value=1),          # which connection
)


def assert_history_matches(conn):
    catch_up(conn)
    recomputed = conn.execute(CARD_HISTORY_RECOMPUTED).fetchall()
    assert conn.execute(CARD_HISTORY).fetchall() == recomputed
    recomputed = conn.execute(STATION_STATS_RECOMPUTED).fetchall()
    assert conn.execute(STATION_STATS).fetchall() == recomputed
    assert conn.execute(STATION_TOTALS).fetchall() == conn.execute(
        STATION_TOTALS_RECOMPUTED).fetchall()
    assert conn.execute(EXPORT_STATS).fetchall() == conn.execute(
        EXPORT_STATS_RECOMPUTED).fetchall()
    assert conn.execute(DEPARTURES).fetchall() == conn.execute(DEPARTURES_RECOMPUTED).fetchall()
    assert conn.execute(PAYMENTS).fetchall() == conn.execute(PAYMENTS_RECOMPUTED).fetchall()
    views = conn.execute("""
        SELECT (SELECT coalesce(sum(swipes), 0) FROM swipes_per_second),
               (SELECT coalesce(sum(entries), 0) FROM acceptance_rate),
               (SELECT count(*) FROM card_events),
               (SELECT count(*) FROM card_events WHERE activity_code = 1)""").fetchone()
    assert views[0] == views[2] and views[1] == views[3]


def test_history_after_a_random_workload(db, conn, stations):
    for card in range(1, 6):
        add_card(conn, card, balance=3000)
    conn.execute("INSERT INTO risk_tags VALUES ('1', 3)")  # its payments above 10,000 blocked
    other = psycopg.connect(db, autocommit=True)

    @settings(max_examples=30, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(operation, min_size=1, max_size=40))
    # Train 1 departs two stations at one instant: the second is refused.
    @example(operations=[("depart", 1, 1, 0, 0), ("depart", 1, 2, 0, 0)])
    def run(operations):
        conn.execute("TRUNCATE card_events, card_alert_export, train_events, station_departures,"
                     " risk_decisions, transaction_decisions")
        for kind, card, station, millis, which in operations:
            target = (conn, other)[which]
            ts = at() + timedelta(milliseconds=millis)
            if kind == "validate_entries":
                target.execute("SELECT * FROM validate_entries(%s, %s, %s)",
                               ([card, card, 5], [station, 1, station],
                                [ts, ts + timedelta(seconds=1), ts]))
            elif kind == "copy":
                with target.cursor().copy(
                        "COPY card_events (card_id, ts, station_id, activity_code, amount, accept)"
                        " FROM STDIN") as copy:
                    copy.write_row((card, ts, station, 1, 250, 1))
                    copy.write_row((card, ts + timedelta(milliseconds=300), station, -1, 0, 1))
            elif kind == "depart":
                # A train departs once at an instant: the same departure again records
                # nothing, one at another station is refused (MT015) and writes nothing.
                try:
                    target.execute("SELECT record_train_event(%s, %s, 1, %s)",
                                   (card, station, ts))
                except psycopg.Error as error:
                    if error.sqlstate != "MT015":
                        raise
            elif kind == "payment":
                # The same id again is the same payment: its recorded decision, nothing new.
                target.execute("SELECT * FROM evaluate_transaction(%s, %s, %s, %s)",
                               (f"p-{card}-{station}", str(card), station * 1000, ts))
            elif kind == "recharge_card":
                target.execute("SELECT recharge_card(%s, 700, %s, %s)", (card, station, ts))
            elif kind == "bulk_insert":
                # A multi-row insert, as a COPY or the loader would do.
                target.execute(
                    "INSERT INTO card_events"
                    " (card_id, ts, station_id, activity_code, amount, accept)"
                    " SELECT %s, %s + n * interval '400 ms', %s, 1, 250, (n %% 3) - 1"
                    " FROM generate_series(0, 4) n", (card, ts, station))
            else:
                target.execute(f"SELECT {kind}(%s, %s, %s)", (card, station, ts))
        assert_history_matches(conn)

    try:
        run()
    finally:
        other.close()


def test_an_open_transaction_holds_the_rollup_back_and_nothing_is_skipped(db, conn, stations):
    """Rows commit out of order: the rollup reads behind the commit horizon, so an event
    whose transaction began first and commits last is still counted, once."""
    add_card(conn, 1, balance=3000)
    add_card(conn, 2, balance=3000)
    late = psycopg.connect(db)
    try:
        late.execute("SELECT validate_entry(1, 1, %s)", (at(),))  # txid taken, not committed
        conn.execute("SELECT validate_entry(2, 2, %s)", (at(5),))
        catch_up(conn)
        assert conn.execute("SELECT sum(pending) FROM worker_lag()").fetchone() == (1,)
        late.commit()
    finally:
        late.close()
    catch_up(conn)
    assert_history_matches(conn)
    assert conn.execute("SELECT sum(swipes) FROM card_history_second").fetchone() == (2,)


def test_no_session_setting_skips_a_record_or_changes_a_decision(db, stations):
    """The old bypass: as a role that may only call the functions, SET
    metro.history_written = 'on' and swipe one card four times within a second. Rule 1
    fires for the last three and the history counts all four."""
    with psycopg.connect(db, autocommit=True) as admin:
        add_card(admin, 7, balance=3000)
        second = admin.execute("SELECT date_trunc('second', now())").fetchone()[0]  # type: ignore[index]
    with psycopg.connect(db, autocommit=True) as app:
        app.execute("SET ROLE metro_app")
        app.execute("SET metro.history_written = 'on'")
        results = [app.execute("SELECT * FROM validate_entry(7, 3, %s)",
                               (second + timedelta(milliseconds=ms),)).fetchone()
                   for ms in (100, 300, 500, 700)]
    assert results == [(True, "Remaining Balance: 27.50")] + [
        (False, "Fraudulent transaction")] * 3
    with psycopg.connect(db, autocommit=True) as admin:
        catch_up(admin)
        assert admin.execute("SELECT second_start, swipes FROM card_history_second"
                             " WHERE card_id = 7").fetchall() == [(second, 4)]
        assert admin.execute("SELECT swipes, entries, accepted, fraud FROM station_second_stats"
                             " WHERE station_id = 3").fetchall() == [(4, 4, 1, 3)]


def test_card_export_stats_keep_counting_after_the_bridge_prunes(conn, stations):
    add_card(conn, 1, balance=0, notify=1)
    for n in range(3):
        conn.execute("SELECT validate_entry(1, 3, %s)", (at(n * 10),))
    catch_up(conn)
    conn.execute("SELECT validate_entry(1, 3, %s)", (at(60),))  # not rolled up yet
    conn.execute("SELECT bridge_ack('card_alert_export', txid, position, 1) FROM"
                 " (SELECT * FROM card_alert_export ORDER BY txid DESC, position DESC LIMIT 1) a")
    assert conn.execute("SELECT pruned FROM bridge_prune('0 seconds', 1000)"
                        " WHERE stream = 'card_alert_export'").fetchone() == (3,)
    # The alert the rollup has not counted stays until it has.
    assert conn.execute("SELECT count(*) FROM card_alert_export").fetchone() == (1,)
    catch_up(conn)
    conn.execute("SELECT bridge_prune('0 seconds', 1000)")
    assert conn.execute("SELECT count(*) FROM card_alert_export").fetchone() == (0,)
    assert conn.execute("SELECT * FROM card_export_stats").fetchall() == [(1, "Old Mill", 4)]


def test_rollup_refuses_a_bad_batch_size(conn):
    with pytest.raises(psycopg.Error) as raised:
        conn.execute("SELECT * FROM run_rollup(0)")
    assert raised.value.sqlstate == "22023"
    assert raised.value.diag.message_primary == (
        "run_rollup: max_rows must be a positive number of rows, got 0")
    assert raised.value.diag.message_hint


def test_payment_totals_keep_counting_after_the_bridge_prunes(conn):
    conn.execute("INSERT INTO risk_tags VALUES (7, 3)")
    for n, amount in enumerate((10000.01, 1.00, 2.00)):
        conn.execute("SELECT * FROM evaluate_transaction(%s, '7', %s::numeric, %s)",
                     (f"p-{n}", amount, at(n)))
    catch_up(conn)
    conn.execute("SELECT * FROM evaluate_transaction('p-3', '7', 20000, %s)", (at(10),))
    # The same transaction again is its recorded decision: nothing more to count.
    conn.execute("SELECT * FROM evaluate_transaction('p-1', '7', 1.00, %s)", (at(1),))
    conn.execute("SELECT bridge_ack('transaction_decisions', txid, position, 4) FROM"
                 " (SELECT * FROM transaction_decisions ORDER BY txid DESC, position DESC"
                 "  LIMIT 1) d")
    assert conn.execute("SELECT pruned FROM bridge_prune('0 seconds', 1000)"
                        " WHERE stream = 'transaction_decisions'").fetchone() == (3,)
    # The decision the rollup has not counted stays until it has.
    assert conn.execute("SELECT transaction_id FROM transaction_decisions").fetchall() == [
        ("p-3",)]
    catch_up(conn)
    conn.execute("SELECT bridge_prune('0 seconds', 1000)")
    assert conn.execute("SELECT count(*) FROM transaction_decisions").fetchone() == (0,)
    assert conn.execute("SELECT blocked, payments FROM payment_totals ORDER BY 1").fetchall() == [
        (False, 2), (True, 2)]
    assert conn.execute("SELECT approved, blocked FROM dashboard_totals").fetchone() == (2, 2)


def test_truncate_clears_what_is_derived(conn, stations):
    add_card(conn, 1, balance=0, notify=1)
    add_card(conn, 2, balance=3000)
    conn.execute("SELECT validate_entry(1, 1, %s)", (at(),))
    conn.execute("SELECT validate_entry(2, 1, %s)", (at(),))
    conn.execute("SELECT * FROM evaluate_transaction('p-1', '7', 1.00, %s)", (at(),))
    catch_up(conn)
    derived = ("SELECT (SELECT count(*) FROM card_history_second),"
               " (SELECT count(*) FROM station_second_slots),"
               " (SELECT count(*) FROM station_totals),"
               " (SELECT count(*) FROM card_export_stats),"
               " (SELECT count(*) FROM payment_totals)")
    assert conn.execute(derived).fetchone() == (2, 1, 1, 1, 1)
    conn.execute("TRUNCATE card_events")
    assert conn.execute(derived).fetchone() == (0, 0, 0, 1, 1)
    conn.execute("TRUNCATE card_alert_export")
    assert conn.execute(derived).fetchone() == (0, 0, 0, 0, 1)
    conn.execute("TRUNCATE transaction_decisions")
    assert conn.execute(derived).fetchone() == (0, 0, 0, 0, 0)

"""The per-second history always equals a recomputation from card_events."""

from datetime import timedelta

import psycopg
from factories import add_card, at, catch_up
from hypothesis import HealthCheck, given, settings
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

operation = st.tuples(
    st.sampled_from(["validate_entry", "process_exit", "recharge_card", "bulk_insert"]),
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
    views = conn.execute("""
        SELECT (SELECT coalesce(sum(swipes), 0) FROM swipes_per_second),
               (SELECT coalesce(sum(entries), 0) FROM acceptance_rate),
               (SELECT count(*) FROM card_events),
               (SELECT count(*) FROM card_events WHERE activity_code = 1)""").fetchone()
    assert views[0] == views[2] and views[1] == views[3]


def test_history_after_a_random_workload(db, conn, stations):
    for card in range(1, 6):
        add_card(conn, card, balance=3000)
    other = psycopg.connect(db, autocommit=True)

    @settings(max_examples=30, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(operation, min_size=1, max_size=40))
    def run(operations):
        conn.execute("TRUNCATE card_events")
        for kind, card, station, millis, which in operations:
            target = (conn, other)[which]
            ts = at() + timedelta(milliseconds=millis)
            if kind == "recharge_card":
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


def test_truncate_clears_the_history(conn, stations):
    add_card(conn, 1, balance=3000)
    conn.execute("SELECT validate_entry(1, 1, %s)", (at(),))
    conn.execute("TRUNCATE card_events")
    assert conn.execute("SELECT (SELECT count(*) FROM card_history_second),"
                        " (SELECT count(*) FROM station_second_slots)").fetchone() == (0, 0)

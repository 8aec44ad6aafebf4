"""record_train_event: arrivals and departures, and the wait-time statistics of departures."""

from decimal import Decimal

import psycopg
import pytest
from factories import add_card, at, call, catch_up


def departures(conn):
    catch_up(conn)
    return conn.execute(
        "SELECT station_id, train_id, ts, riders, wait_seconds FROM station_departures"
        " ORDER BY ts, station_id").fetchall()


def test_events_are_recorded(conn, stations):
    conn.execute("SELECT record_train_event(1, 4, 0, %s)", (at(),))
    conn.execute("SELECT record_train_event(1, 4, 1, %s)", (at(30),))
    assert conn.execute("SELECT train_id, station_id, activity_type, ts FROM train_events"
                        " ORDER BY ts").fetchall() == [(1, 4, 0, at()), (1, 4, 1, at(30))]


def test_departure_turns_waiting_entries_into_wait_times(conn, stations):
    for card in (1, 2, 3):
        add_card(conn, card, balance=5000)
    conn.execute("SELECT record_train_event(2, 4, 1, %s)", (at(0),))
    call(conn, "validate_entry", 1, 4, at(10))
    call(conn, "validate_entry", 2, 4, at(40))
    call(conn, "validate_entry", 3, 5, at(41))  # another station
    conn.execute("SELECT record_train_event(1, 4, 1, %s)", (at(100),))
    call(conn, "validate_entry", 3, 4, at(130))
    conn.execute("SELECT record_train_event(3, 4, 1, %s)", (at(160),))
    assert departures(conn) == [
        (4, 2, at(0), 0, Decimal(0)),
        (4, 1, at(100), 2, Decimal(90 + 60)),
        (4, 3, at(160), 1, Decimal(30)),
    ]
    assert conn.execute(
        "SELECT station_id, name, departures, riders, average_wait_seconds FROM station_wait_times"
    ).fetchall() == [(4, "Lantern Square", 3, 3, Decimal("60.0"))]


def test_refused_entries_are_not_waiting(conn, stations):
    add_card(conn, 1, balance=0)
    call(conn, "validate_entry", 1, 4, at(10))
    conn.execute("SELECT record_train_event(1, 4, 1, %s)", (at(20),))
    assert departures(conn) == [(4, 1, at(20), 0, Decimal(0))]


def test_first_departure_looks_back_at_most_max_wait(conn, stations):
    add_card(conn, 1, balance=5000)
    add_card(conn, 2, balance=5000)
    call(conn, "validate_entry", 1, 4, at(minutes=0))
    call(conn, "validate_entry", 2, 4, at(minutes=25))
    conn.execute("UPDATE settings SET max_wait = '10 minutes'")
    conn.execute("SELECT record_train_event(1, 4, 1, %s)", (at(minutes=30),))
    assert departures(conn) == [(4, 1, at(minutes=30), 1, Decimal(300))]


def test_wait_times_count_riders_beyond_the_integer_range(conn, stations):
    # Two departures of 2,000,000,000 riders each: 4 billion, past an integer's range.
    conn.execute("INSERT INTO station_departures (station_id, train_id, ts, riders, wait_seconds)"
                 " VALUES (4, 1, %s, 2000000000, 6000000000), (4, 2, %s, 2000000000, 2000000000)",
                 (at(0), at(60)))
    assert conn.execute(
        "SELECT departures, riders, average_wait_seconds FROM station_wait_times"
    ).fetchall() == [(2, 4_000_000_000, Decimal("2.0"))]


def test_the_same_event_sent_twice_is_recorded_once(conn, stations):
    """A producer's retry repeats a departure: one row, one departures row. The same
    train leaving another station at that instant contradicts it: refused with MT015
    (before, both raised a unique violation, 23505, that no error code documented)."""
    add_card(conn, 1, balance=5000)
    call(conn, "validate_entry", 1, 4, at(10))
    for _ in range(2):
        conn.execute("SELECT record_train_event(1, 4, 1, %s)", (at(30),))
    assert conn.execute("SELECT count(*) FROM train_events").fetchone() == (1,)
    assert departures(conn) == [(4, 1, at(30), 1, Decimal(20))]
    with pytest.raises(psycopg.Error) as error:
        conn.execute("SELECT record_train_event(1, 5, 1, %s)", (at(30),))
    assert (error.value.sqlstate, error.value.diag.message_primary,
            error.value.diag.message_hint) == (
        "MT015", f"Train 1 already has its departure at {at(30):%Y-%m-%d %H:%M:%S}+00 recorded"
                 " at station 4, not 5",
        "A train arrives or departs once at an instant; check the event's station and ts.")
    assert conn.execute("SELECT row_level FROM error_codes WHERE sqlstate = 'MT015'"
                        ).fetchone() == (True,)
    # An arrival at that instant is another event.
    conn.execute("SELECT record_train_event(1, 4, 0, %s)", (at(30),))
    assert conn.execute("SELECT count(*) FROM train_events").fetchone() == (2,)

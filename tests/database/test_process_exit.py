"""process_exit: exits are recorded; an open accepted entry becomes a trips row."""

from factories import add_card, at, call, events, stream

EXIT = -1


def test_exit_after_accepted_entry_writes_a_trip(conn, stations):
    add_card(conn, 42, balance=5000)
    call(conn, "validate_entry", 42, 4, at())
    assert call(conn, "process_exit", 42, 9, at(minutes=12)) == (True, "Exit recorded")
    assert events(conn)[-1] == (42, at(minutes=12), 9, EXIT, 0, 1)
    assert stream(conn, "trips") == [(42, 4, at(), 9, at(minutes=12))]


def test_trip_uses_the_latest_entry_not_the_highest_station(conn, stations):
    add_card(conn, 42, balance=5000)
    call(conn, "validate_entry", 42, 15, at())
    call(conn, "process_exit", 42, 9, at(minutes=20))
    call(conn, "validate_entry", 42, 2, at(minutes=30))
    call(conn, "process_exit", 42, 5, at(minutes=45))
    assert stream(conn, "trips") == [(42, 15, at(), 9, at(minutes=20)),
                                     (42, 2, at(minutes=30), 5, at(minutes=45))]


def test_exit_without_entry_is_recorded_without_a_trip(conn, stations):
    add_card(conn, 42, balance=5000)
    assert call(conn, "process_exit", 42, 9, at()) == (True, "Exit recorded without an open entry")
    assert events(conn) == [(42, at(), 9, EXIT, 0, 1)]
    assert stream(conn, "trips") == []


def test_second_exit_does_not_repeat_the_trip(conn, stations):
    add_card(conn, 42, balance=5000)
    call(conn, "validate_entry", 42, 4, at())
    call(conn, "process_exit", 42, 9, at(minutes=10))
    assert call(conn, "process_exit", 42, 9, at(minutes=11)) == (
        True, "Exit recorded without an open entry")
    assert len(stream(conn, "trips")) == 1


def test_refused_entry_opens_no_trip(conn, stations):
    add_card(conn, 42, balance=100)
    assert call(conn, "validate_entry", 42, 4, at())[0] is False
    assert call(conn, "process_exit", 42, 9, at(minutes=5)) == (
        True, "Exit recorded without an open entry")
    assert stream(conn, "trips") == []


def test_refused_swipe_after_an_entry_keeps_the_trip_open(conn, stations):
    add_card(conn, 42, balance=5000)
    call(conn, "validate_entry", 42, 4, at(0))
    assert call(conn, "validate_entry", 42, 4, at(0.5)) == (False, "Fraudulent transaction")
    call(conn, "process_exit", 42, 9, at(minutes=10))
    assert stream(conn, "trips") == [(42, 4, at(0), 9, at(minutes=10))]


def test_unknown_card_exit_is_recorded_as_rejected(conn, stations):
    assert call(conn, "process_exit", 5, 9, at()) == (False, "Card Invalid")
    assert events(conn) == [(5, at(), 9, EXIT, 0, 0)]


def test_disabled_card_may_still_leave(conn, stations):
    add_card(conn, 42, balance=5000)
    call(conn, "validate_entry", 42, 4, at())
    conn.execute("UPDATE cards SET enabled = false WHERE card_id = 42")
    assert call(conn, "process_exit", 42, 9, at(minutes=10)) == (True, "Exit recorded")


DAY = 24 * 60  # minutes


def test_an_entry_older_than_a_day_is_still_closed(conn, stations):
    # process_exit reads the last day first and all of history only when that day holds
    # no entry or exit: the entry of two days before is found the second way.
    add_card(conn, 42, balance=5000)
    call(conn, "validate_entry", 42, 4, at())
    assert call(conn, "process_exit", 42, 9, at(minutes=2 * DAY)) == (True, "Exit recorded")
    assert stream(conn, "trips") == [(42, 4, at(), 9, at(minutes=2 * DAY))]


def test_an_exit_older_than_a_day_still_closed_the_trip_before_it(conn, stations):
    add_card(conn, 42, balance=5000)
    call(conn, "validate_entry", 42, 4, at())
    call(conn, "process_exit", 42, 9, at(minutes=10))
    assert call(conn, "process_exit", 42, 9, at(minutes=2 * DAY)) == (
        True, "Exit recorded without an open entry")
    assert stream(conn, "trips") == [(42, 4, at(), 9, at(minutes=10))]


def test_the_last_days_entry_wins_over_older_history(conn, stations):
    add_card(conn, 42, balance=5000)
    call(conn, "validate_entry", 42, 4, at())
    call(conn, "validate_entry", 42, 6, at(minutes=DAY + 60))
    call(conn, "process_exit", 42, 9, at(minutes=DAY + 80))
    assert stream(conn, "trips") == [(42, 6, at(minutes=DAY + 60), 9, at(minutes=DAY + 80))]

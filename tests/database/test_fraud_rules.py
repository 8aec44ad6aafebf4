"""The fraud rules at their edges, through is_fraud (read-only) and validate_entry."""

from datetime import timedelta

import psycopg
import pytest
from factories import add_card, at, call, counts

MICROSECOND = timedelta(microseconds=1)


def is_fraud(conn, card, station, ts):
    row = conn.execute("SELECT is_fraud(%s, %s, %s)", (card, station, ts)).fetchone()
    return row[0]


def enter(conn, card, station, ts):
    return call(conn, "validate_entry", card, station, ts)


def test_four_distinct_stations_pass_five_are_fraud(conn, stations):
    add_card(conn, 42, balance=50_000)
    for minute, station in enumerate((1, 2, 3, 4)):
        assert enter(conn, 42, station, at(minutes=minute))[0] is True
    assert is_fraud(conn, 42, 5, at(minutes=10)) is False
    assert enter(conn, 42, 5, at(minutes=10)) == (True, "Remaining Balance: 487.00")
    assert is_fraud(conn, 42, 6, at(minutes=11)) is True
    assert enter(conn, 42, 6, at(minutes=11)) == (False, "Fraudulent transaction")


def test_nine_entries_pass_ten_are_fraud(conn, stations):
    add_card(conn, 42, balance=50_000)
    for minute in range(9):
        assert enter(conn, 42, 1, at(minutes=minute))[0] is True
    assert is_fraud(conn, 42, 1, at(minutes=20)) is False
    assert enter(conn, 42, 1, at(minutes=20))[0] is True
    assert is_fraud(conn, 42, 1, at(minutes=21)) is True
    assert enter(conn, 42, 1, at(minutes=21)) == (False, "Fraudulent transaction")


def test_refused_entries_count_too(conn, stations):
    add_card(conn, 42, balance=0)
    for minute in range(10):
        assert enter(conn, 42, 1, at(minutes=minute))[1] == "Card has insufficient balance: 0.00"
    assert is_fraud(conn, 42, 1, at(minutes=30)) is True


def test_entry_exactly_one_hour_old_still_counts(conn, stations):
    add_card(conn, 42, balance=50_000)
    for minute, station in enumerate((1, 2, 3, 4, 5)):
        enter(conn, 42, station, at(minutes=minute))
    # The oldest entry, at minute 0, is exactly one hour old: five stations.
    assert is_fraud(conn, 42, 9, at(minutes=60)) is True
    # One microsecond later it has left the window: four stations.
    assert is_fraud(conn, 42, 9, at(minutes=60) + MICROSECOND) is False


def test_entries_at_or_after_ts_do_not_count(conn, stations):
    add_card(conn, 42, balance=50_000)
    for minute, station in enumerate((1, 2, 3, 4, 5)):
        enter(conn, 42, station, at(minutes=10 + minute))
    assert is_fraud(conn, 42, 9, at(minutes=5)) is False


def test_same_second_is_fraud_adjacent_seconds_are_not(conn, stations):
    add_card(conn, 42, balance=50_000)
    enter(conn, 42, 1, at(0.999))
    assert is_fraud(conn, 42, 1, at(0.5)) is True
    assert is_fraud(conn, 42, 1, at(0.0)) is True
    assert is_fraud(conn, 42, 1, at(1.0)) is False
    assert is_fraud(conn, 42, 1, at(0) - MICROSECOND) is False
    assert enter(conn, 42, 1, at(1.0)) == (True, "Remaining Balance: 495.00")


def test_a_recharge_in_the_same_second_is_no_gate_swipe(conn, stations):
    add_card(conn, 42, balance=50_000)
    assert call(conn, "recharge_card", 42, 500, 1, at(3.1)) == (
        True, "Recharged: 5.00, Balance: 505.00")
    assert is_fraud(conn, 42, 1, at(3.6)) is False
    assert enter(conn, 42, 1, at(3.6)) == (True, "Remaining Balance: 502.50")
    assert conn.execute("SELECT count(*) FROM fraud").fetchone() == (0,)


def test_an_exit_in_the_same_second_is_a_gate_swipe(conn, stations):
    add_card(conn, 42, balance=50_000)
    assert call(conn, "process_exit", 42, 1, at(3.1)) == (
        True, "Exit recorded without an open entry")
    assert enter(conn, 42, 2, at(3.6)) == (False, "Fraudulent transaction")
    assert conn.execute("SELECT trans_id, station_id FROM fraud").fetchall() == [
        (f"42_{int(at(3.6).timestamp() * 1_000_000)}", 2)]


def test_a_refused_entry_in_the_same_second_still_counts(conn, stations):
    add_card(conn, 42, balance=100)  # below the fare: refused, recorded
    assert enter(conn, 42, 1, at(3.1)) == (False, "Card has insufficient balance: 1.00")
    assert is_fraud(conn, 42, 2, at(3.9)) is True
    assert is_fraud(conn, 42, 2, at(4.0)) is False


def test_the_batch_counts_gate_swipes_as_single_calls_do(conn, stations):
    for card in (42, 43):
        add_card(conn, card, balance=50_000)
        call(conn, "recharge_card", card, 500, 1, at(3.1))
    call(conn, "process_exit", 43, 1, at(3.2))
    assert conn.execute(
        "SELECT * FROM validate_entries('{42, 43, 42}', '{1, 2, 3}', %s::timestamptz[])",
        ([at(3.5), at(3.5), at(3.8)],)).fetchall() == [
        (1, True, "Remaining Balance: 502.50"), (2, False, "Fraudulent transaction"),
        (3, False, "Fraudulent transaction")]


def test_thresholds_from_settings_apply_on_the_next_call(conn, stations):
    add_card(conn, 42, balance=50_000)
    for minute, station in enumerate((1, 2, 3)):
        enter(conn, 42, station, at(minutes=minute))
    assert is_fraud(conn, 42, 4, at(minutes=10)) is False
    conn.execute("UPDATE settings SET fraud_station_limit = 3")
    assert is_fraud(conn, 42, 4, at(minutes=10)) is True
    conn.execute("UPDATE settings SET fraud_station_limit = 5, fraud_entry_limit = 3")
    assert is_fraud(conn, 42, 4, at(minutes=10)) is True
    conn.execute("UPDATE settings SET fraud_entry_limit = 10, fraud_window = '5 minutes'")
    assert is_fraud(conn, 42, 4, at(minutes=10)) is False
    assert enter(conn, 42, 4, at(minutes=10))[0] is True


def test_is_fraud_writes_nothing(conn, stations):
    add_card(conn, 42, balance=50_000)
    enter(conn, 42, 1, at())
    before = counts(conn)
    assert is_fraud(conn, 42, 1, at(0.5)) is True
    assert counts(conn) == before


def test_settings_reject_nonsense_thresholds(conn, stations):
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("UPDATE settings SET fraud_entry_limit = 0")
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute("INSERT INTO settings DEFAULT VALUES")
    for statement in ("DELETE FROM settings", "TRUNCATE settings"):
        with pytest.raises(psycopg.Error) as raised:
            conn.execute(statement)
        assert raised.value.sqlstate == "MT006"
    assert conn.execute("SELECT count(*) FROM settings").fetchone() == (1,)


def test_a_window_shorter_than_the_second_still_sees_the_whole_second(conn, stations):
    # One read serves every rule: it must start at the second's start even when the
    # window (here 100 ms) starts later, or rule 1 would miss an earlier swipe.
    conn.execute("UPDATE settings SET fraud_window = interval '100 milliseconds'")
    add_card(conn, 42, balance=5000)
    assert enter(conn, 42, 1, at(seconds=0.1))[0] is True
    assert is_fraud(conn, 42, 2, at(seconds=0.9)) is True
    assert enter(conn, 42, 2, at(seconds=0.9)) == (False, "Fraudulent transaction")
    # The window's entries alone: 100 ms later in the next second, nothing counts.
    assert is_fraud(conn, 42, 2, at(seconds=1.05)) is False

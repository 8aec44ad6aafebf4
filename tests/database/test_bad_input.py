"""Bad input raises a clear error with its documented SQLSTATE and writes nothing."""

import psycopg
import pytest
from factories import add_card, at, counts

from metro import errors

CASES = [
    # (call, arguments, SQLSTATE, message)
    ("validate_entry", (42, 99, at()), "MT001", "Unknown station: 99"),
    ("process_exit", (42, 99, at()), "MT001", "Unknown station: 99"),
    ("recharge_card", (42, 500, 99, at()), "MT001", "Unknown station: 99"),
    ("is_fraud", (42, 99, at()), "MT001", "Unknown station: 99"),
    ("record_train_event", (1, 99, 0, at()), "MT001", "Unknown station: 99"),
    ("record_train_event", (99, 4, 0, at()), "MT002", "Unknown train: 99"),
    ("recharge_card", (42, -500, 9, at()), "MT003",
     "Recharge amount must be a positive number of cents: -500"),
    ("recharge_card", (42, 0, 9, at()), "MT003",
     "Recharge amount must be a positive number of cents: 0"),
    ("record_train_event", (1, 4, 7, at()), "MT005",
     "record_train_event: activity_type must be 0 (arrival) or 1 (departure), got 7"),
    ("validate_entry", (None, 4, at()), "MT004", "validate_entry: card_id must not be NULL"),
    ("validate_entry", (42, None, at()), "MT004", "validate_entry: station_id must not be NULL"),
    ("validate_entry", (42, 4, None), "MT004", "validate_entry: ts must not be NULL"),
    ("process_exit", (None, 4, at()), "MT004", "process_exit: card_id must not be NULL"),
    ("process_exit", (42, None, at()), "MT004", "process_exit: station_id must not be NULL"),
    ("process_exit", (42, 4, None), "MT004", "process_exit: ts must not be NULL"),
    ("recharge_card", (None, 500, 4, at()), "MT004", "recharge_card: card_id must not be NULL"),
    ("recharge_card", (42, None, 4, at()), "MT004", "recharge_card: amount must not be NULL"),
    ("recharge_card", (42, 500, None, at()), "MT004",
     "recharge_card: station_id must not be NULL"),
    ("recharge_card", (42, 500, 4, None), "MT004", "recharge_card: ts must not be NULL"),
    ("is_fraud", (None, 4, at()), "MT004", "is_fraud: card_id must not be NULL"),
    ("is_fraud", (42, None, at()), "MT004", "is_fraud: station_id must not be NULL"),
    ("is_fraud", (42, 4, None), "MT004", "is_fraud: ts must not be NULL"),
    ("record_train_event", (None, 4, 0, at()), "MT004",
     "record_train_event: train_id must not be NULL"),
    ("record_train_event", (1, None, 0, at()), "MT004",
     "record_train_event: station_id must not be NULL"),
    ("record_train_event", (1, 4, None, at()), "MT004",
     "record_train_event: activity_type must not be NULL"),
    ("record_train_event", (1, 4, 0, None), "MT004", "record_train_event: ts must not be NULL"),
]

TYPES = {
    "validate_entry": "bigint, integer, timestamptz",
    "process_exit": "bigint, integer, timestamptz",
    "is_fraud": "bigint, integer, timestamptz",
    "recharge_card": "bigint, integer, integer, timestamptz",
    "record_train_event": "integer, integer, integer, timestamptz",
}


@pytest.mark.parametrize(("function", "args", "sqlstate", "message"), CASES,
                         ids=[f"{c[0]}-{c[2]}-{i}" for i, c in enumerate(CASES)])
def test_bad_argument_is_refused_and_nothing_written(conn, stations, function, args, sqlstate,
                                                     message):
    add_card(conn, 42, balance=1000)
    before = counts(conn)
    casts = ", ".join(f"%s::{t}" for t in TYPES[function].split(", "))
    with pytest.raises(psycopg.Error) as raised:
        conn.execute(f"SELECT {function}({casts})", args)
    assert raised.value.sqlstate == sqlstate
    assert raised.value.diag.message_primary == message
    assert counts(conn) == before
    assert conn.execute("SELECT balance FROM cards").fetchall() == [(1000,)]


def test_errors_map_to_metro_exceptions(conn, stations):
    with pytest.raises(psycopg.Error) as raised:
        conn.execute("SELECT validate_entry(42, 99)")
    translated = errors.translate(raised.value, errors.ErrorCodes.load(conn))
    assert isinstance(translated, errors.RefusedInput)
    assert (translated.code.sqlstate, translated.code.name, translated.code.row_level) == (
        "MT001", "unknown_station", True)
    assert str(translated) == "Unknown station: 99"
    assert translated.hint == ("Load the stations first: loader stations.csv (with --header"
                               " when the file has one).")
    lost = psycopg.OperationalError("server closed\nthe connection")
    assert isinstance(errors.translate(lost, errors.ErrorCodes()), errors.DatabaseUnavailable)


@pytest.mark.parametrize(("column", "value"), [
    ("card_type", 2), ("notify", 3), ("balance", -1)])
def test_card_values_outside_their_set_are_refused(conn, column, value):
    row = {"card_id": 1, "enabled": True, "card_type": 0, "balance": 0, "notify": 0, column: value}
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("INSERT INTO cards (card_id, enabled, card_type, balance, notify)"
                     " VALUES (%(card_id)s, %(enabled)s, %(card_type)s, %(balance)s, %(notify)s)",
                     row)
    assert conn.execute("SELECT count(*) FROM cards").fetchone() == (0,)


def test_unlimited_card_needs_an_expiry(conn):
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("INSERT INTO cards (card_id, card_type) VALUES (1, 1)")


@pytest.mark.parametrize(("column", "value"), [("activity_code", 3), ("accept", 2)])
def test_event_codes_outside_their_set_are_refused(conn, stations, column, value):
    event = {"activity_code": 1, "accept": 1, column: value}
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("INSERT INTO card_events (card_id, ts, station_id, activity_code, accept)"
                     " VALUES (1, now(), 1, %(activity_code)s, %(accept)s)", event)
    assert counts(conn)["card_history_second"] == 0


@pytest.mark.parametrize("statement", [
    "UPDATE card_events SET amount = 0", "DELETE FROM card_events"])
def test_card_events_are_append_only(conn, stations, statement):
    add_card(conn, 42, balance=1000)
    conn.execute("SELECT validate_entry(42, 1, %s)", (at(),))
    with pytest.raises(psycopg.Error) as raised:
        conn.execute(statement)
    assert raised.value.sqlstate == "MT006"
    assert conn.execute("SELECT count(*), sum(amount) FROM card_events").fetchone() == (1, 250)


def test_events_at_an_unknown_station_are_refused_with_their_statement(conn, stations):
    # One statement trigger checks every row an INSERT or COPY adds: the lowest
    # unknown station is named, and none of the statement's rows stays.
    with pytest.raises(psycopg.Error) as raised:
        conn.execute("INSERT INTO card_events (card_id, ts, station_id, activity_code, accept)"
                     " VALUES (1, now(), 1, 1, 1), (2, now(), 98, 1, 1), (3, now(), 97, 1, 1)")
    assert (raised.value.sqlstate, raised.value.diag.message_primary) == (
        "MT001", "Unknown station: 97")
    with pytest.raises(psycopg.Error) as raised, conn.cursor().copy(
            "COPY card_events (card_id, ts, station_id, activity_code, accept)"
            " FROM STDIN") as copy:
        for card in range(1, 1001):
            copy.write_row((card, at(), 99 if card == 700 else 1 + card % 15, 1, 1))
    assert (raised.value.sqlstate, raised.value.diag.message_primary) == (
        "MT001", "Unknown station: 99")
    assert counts(conn)["card_events"] == 0
    conn.execute("INSERT INTO card_events (card_id, ts, station_id, activity_code, accept)"
                 " VALUES (1, now(), 1, 1, 1), (2, now(), 15, 1, 1)")
    assert counts(conn)["card_events"] == 2

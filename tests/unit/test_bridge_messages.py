"""Inbound message values: VoltDB's CSV lines and JSON objects, and the exact complaint for
everything else (it becomes the dead-letter reason)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from metro import calls
from metro.bridge.messages import (
    InvalidMessage,
    Payment,
    Recharge,
    TrainEvent,
    call_for,
    parse_payment,
    parse_recharge,
    parse_timestamp,
    parse_train_event,
)

T = datetime(2026, 11, 21, 8, 15, 0, 250000, tzinfo=UTC)


@pytest.mark.parametrize("text, expected", [
    ("2026-11-21T08:15:00.250+00:00", T),
    ("2026-11-21T08:15:00.25Z", T),
    ("2026-11-21 08:15:00.250", T),
    ("2026-11-21 09:15:00.250+01", T.astimezone(timezone(timedelta(hours=1)))),
    ("1795248900250000", T),
    ("1795248900250", T),
    ("1795248900.25", T),
])
def test_timestamps_in_iso_8601_or_epoch_numbers(text, expected):
    assert parse_timestamp(text) == expected


@pytest.mark.parametrize("text, reason", [
    ("179524890025", "timestamp 179524890025 is outside 2000-01-01..2200-01-01 (UTC) read as "
                     "epoch seconds, milliseconds or microseconds"),
    ("yesterday", "timestamp 'yesterday' is neither ISO 8601 nor an epoch number"),
    ("99999999999999999999", "timestamp 99999999999999999999 is outside 2000-01-01..2200-01-01"
                             " (UTC) read as epoch seconds, milliseconds or microseconds"),
])
def test_bad_timestamps_are_named(text, reason):
    with pytest.raises(InvalidMessage) as error:
        parse_timestamp(text)
    assert str(error.value) == reason


def test_train_event_as_csv_and_as_json():
    expected = TrainEvent(3, 7, 1, T)
    assert parse_train_event(b"3,7,1,2026-11-21T08:15:00.250Z") == expected
    assert parse_train_event(b" 3, 7 ,1,1795248900250000\n") == expected
    assert parse_train_event(b'{"train_id": 3, "station_id": "7", "activity_type": 1,'
                             b' "ts": "2026-11-21T08:15:00.250Z"}') == expected
    assert parse_train_event(b'{"train_id": 3, "station_id": 7, "activity_type": 1,'
                             b' "timestamp": 1795248900250000}') == expected


def test_a_byte_order_mark_before_a_value_is_not_data():
    expected = TrainEvent(3, 7, 1, T)
    assert parse_train_event("\ufeff3,7,1,2026-11-21T08:15:00.250Z".encode()) == expected
    assert parse_train_event('\ufeff{"train_id": 3, "station_id": 7, "activity_type": 1,'
                             ' "ts": "2026-11-21T08:15:00.250Z"}'.encode()) == expected


def test_recharge_as_csv_and_as_json_with_an_optional_timestamp():
    assert parse_recharge(b"42,2000,4") == Recharge(42, 2000, 4, None)
    assert parse_recharge(b"42,2000,4,2026-11-21T08:15:00.250Z") == Recharge(42, 2000, 4, T)
    assert parse_recharge(b'{"card_id": 42, "amount": 2000, "station_id": 4}') == Recharge(
        42, 2000, 4, None)
    assert parse_recharge(b'{"card_id": 9000000000, "amount": 1, "station_id": 4,'
                          b' "ts": "2026-11-21T08:15:00.250+00:00"}') == Recharge(
        9000000000, 1, 4, T)


@pytest.mark.parametrize("topic, value, reason", [
    ("TRAINTOPIC", b"3,7,1", "expected 4 comma-separated fields "
                             "(train_id,station_id,activity_type,ts), got 3"),
    ("TRAINTOPIC", b"3,seven,1,1795248900250000", "station_id must be an integer, got 'seven'"),
    ("TRAINTOPIC", b"3,,1,", "empty field: station_id, ts"),
    ("RECHARGE", b"42,20.00,4", "amount must be an integer, got '20.00'"),
    ("RECHARGE", b"42,2000,4,now,extra", "expected 3 or 4 comma-separated fields "
                                         "(card_id,amount,station_id,ts), got 5"),
    ("RECHARGE", b'{"card_id": 42, "amount": 2000.5, "station_id": 4}',
     "amount must be an integer, got 2000.5"),
    # Cents, never units: 20.00 could mean either.
    ("RECHARGE", b'{"card_id": 42, "amount": 20.00, "station_id": 4}',
     "amount must be an integer, got 20.00"),
    ("RECHARGE", b'{"card_id": 42, "station_id": 4}', "JSON object lacks amount"),
    ("RECHARGE", b'{"card_id": 42,', "value is not valid JSON: Expecting property name enclosed "
                                    "in double quotes at character 15"),
    ("RECHARGE", b"42,3000000000,4", "amount 3000000000 does not fit in 32 bits"),
    ("RECHARGE", b"\xff\xfe", "value is not UTF-8 text"),
    ("RECHARGE", b"  ", "value is empty"),
    ("RECHARGE", None, "value is empty (tombstone)"),
])
def test_unusable_values_say_why(topic, value, reason):
    with pytest.raises(InvalidMessage) as error:
        call_for(topic, value)
    assert str(error.value) == reason


def test_each_topic_calls_its_function():
    assert call_for("TRAINTOPIC", b"3,7,0,1795248900250000") == (
        calls.RECORD_TRAIN_EVENT.sql, (3, 7, 0, T))
    assert call_for("RECHARGE", b"42,2000,4") == (calls.RECHARGE_CARD.sql, (42, 2000, 4, None))


# Values that once escaped the parser with ValueError, RecursionError or csv.Error and
# stopped their partition; each is now an InvalidMessage saying what is wrong.
ESCAPES = [
    (b"400000,1,1,\xc2\xb2", "timestamp '\u00b2' is neither ISO 8601 nor an epoch number"),
    (b'{"card_id": 1e9999999999000000000, "amount": 1, "station_id": 4}',
     "number '1e9999999999000000000' is out of range"),
    (b"42," + b"9" * 5000 + b",3",
     "amount 999999999999999999...999999999999999999 (5000 characters) does not fit in 32 bits"),
    (b'{"card_id": ' + b"1" * 5000 + b', "amount": 1, "station_id": 3}',
     "card_id 111111111111111111...111111111111111111 (5000 characters) does not fit in 64 bits"),
    (b"[" * 100_000, "value is not valid JSON: nested too deeply"),
    (b'{"card_id": ' * 100_000, "value is not valid JSON: nested too deeply"),
    (b"42,20\n00,3", "value is not one CSV line: new-line character seen in unquoted field"),
    (b'42,"2000,3', "value is not one CSV line: unexpected end of data"),
    (b"\xff\xfe42,2000,3", "value is not UTF-8 text"),
    (b"", "value is empty"),
    (b"[42, 2000, 3]", "value is a JSON array, not a JSON object"),
    (b"42,2000,3\x00", "value contains a NUL character"),
    (b'{"card_id": 42, "amount": 2000, "station_id": 3, "ts": 0}',
     "timestamp 0 is outside 2000-01-01..2200-01-01 (UTC) read as epoch seconds, milliseconds"
     " or microseconds"),
    (b'{"card_id": 42, "amount": [2000], "station_id": 3}',
     "amount must be an integer, got [2000]"),
    (b'{"card_id": 42, "amount": 2000, "station_id": 3, "ts": {"at": 1}}',
     "timestamp must be ISO 8601 text or an epoch number, got {'at': 1}"),
]


@pytest.mark.parametrize("value, reason", ESCAPES)
def test_values_that_used_to_escape_say_why(value, reason):
    with pytest.raises(InvalidMessage) as error:
        call_for("RECHARGE", value)
    assert str(error.value) == reason


EXAMPLE_PAYMENT = {"transaction_id": "tx1001", "account_id": "account123", "amount": 12000.0,
                   "timestamp": 1735862698.123}


def test_payment_as_the_payment_example_sends_it():
    value = json.dumps(EXAMPLE_PAYMENT).encode()  # the example's value_serializer
    assert parse_payment(value) == Payment(
        "tx1001", "account123", Decimal("12000.0"),
        datetime(2025, 1, 3, 0, 4, 58, 123000, tzinfo=UTC))


@pytest.mark.parametrize("value, expected", [
    (b'{"transaction_id": "t", "account_id": 123, "amount": 0.1}',
     Payment("t", "123", Decimal("0.1"), None)),
    (b'{"transaction_id": 5, "account_id": "007", "amount": "19.99"}',
     Payment("5", "007", Decimal("19.99"), None)),
    (b'{"transaction_id": "t", "account_id": 9223372036854775808, "amount": 1e4}',
     Payment("t", "9223372036854775808", Decimal("1E+4"), None)),
    (b'{"transaction_id": "t", "account_id": "a", "amount": 0.30000000000000004}',
     Payment("t", "a", Decimal("0.30000000000000004"), None)),
    (b"t,account123,12.50,1735862698.123",
     Payment("t", "account123", Decimal("12.50"),
             datetime(2025, 1, 3, 0, 4, 58, 123000, tzinfo=UTC))),
    (b'{"transaction_id": "t", "account_id": "a", "amount": 1, "timestamp": ""}',
     Payment("t", "a", Decimal("1"), None)),
    # Whitespace around a JSON string id goes, as around a CSV field.
    (b'{"transaction_id": " t ", "account_id": "\\tacct-hi ", "amount": 1}',
     Payment("t", "acct-hi", Decimal("1"), None)),
    (b" t , acct-hi , 1 ", Payment("t", "acct-hi", Decimal("1"), None)),
])
def test_payment_account_ids_are_text_and_amounts_exact(value, expected):
    assert parse_payment(value) == expected


@pytest.mark.parametrize("value, reason", [
    (b'{"transaction_id": "t", "account_id": 7.5, "amount": 1}',
     "account_id must be a string or an integer, got 7.5"),
    (b'{"transaction_id": "t", "account_id": true, "amount": 1}',
     "account_id must be a string or an integer, got True"),
    (b'{"transaction_id": "t", "account_id": "a\\u0000b", "amount": 1}',
     "account_id contains a NUL character"),
    (b'{"transaction_id": "t\\ud800", "account_id": "a", "amount": 1}',
     "transaction_id is not valid Unicode text (a lone surrogate)"),
    (b'{"transaction_id": "t", "account_id": "a", "amount": Infinity}',
     "amount must be a decimal number, got inf"),
    (b'{"transaction_id": "t", "account_id": "a", "amount": "1_000"}',
     "amount must be a decimal number, got '1_000'"),
])
def test_bad_payment_fields_say_why(value, reason):
    with pytest.raises(InvalidMessage) as error:
        parse_payment(value)
    assert str(error.value) == reason


def test_the_payment_call_is_the_core_s_one_call():
    query, args = call_for("transaction_topic", json.dumps(EXAMPLE_PAYMENT).encode())
    assert query == calls.EVALUATE_TRANSACTION.sql
    assert "%s::text, %s::text, %s::numeric" in query
    assert args == ("tx1001", "account123", Decimal("12000.0"),
                    datetime(2025, 1, 3, 0, 4, 58, 123000, tzinfo=UTC))

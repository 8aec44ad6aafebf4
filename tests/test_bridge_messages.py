"""Inbound message values: VoltDB's CSV lines and JSON objects, and the exact complaint for
everything else (it becomes the dead-letter reason)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from bridge.messages import (
    InvalidMessage,
    Recharge,
    TrainEvent,
    call_for,
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
        "SELECT metro.record_train_event(%s, %s, %s, %s)", (3, 7, 0, T))
    assert call_for("RECHARGE", b"42,2000,4") == (
        "SELECT * FROM metro.recharge_card(%s, %s, %s, coalesce(%s::timestamptz, now()))",
        (42, 2000, 4, None))

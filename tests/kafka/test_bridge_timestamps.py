"""Timestamps of inbound messages: ISO 8601 or epoch numbers read by magnitude, each to its
exact instant; absurd values refused with a reason; a message without one takes its Kafka
record's timestamp."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from factories import add_card, balance
from kafka_fixtures import skip_inbound_backlog, wait_until

from metro.bridge.messages import InvalidMessage, parse_message, parse_timestamp, record_timestamp

T = datetime(2025, 1, 3, 0, 4, 58, 123000, tzinfo=UTC)  # 1735862698.123
OUTSIDE = "is outside 2000-01-01..2200-01-01 (UTC) read as epoch seconds, milliseconds or " \
          "microseconds"


@pytest.mark.parametrize("value, expected", [
    # ISO 8601; no offset means UTC
    ("2025-01-03T00:04:58.123Z", T),
    ("2025-01-03T00:04:58.123+00:00", T),
    ("2025-01-03T01:04:58.123+01:00", T),
    ("2025-01-02T19:04:58.123-05:00", T),
    ("2025-01-03T00:04:58.123", T),
    ("2025-01-03 00:04:58.123000", T),
    ("2026-11-30 07:55:00.366832", datetime(2026, 11, 30, 7, 55, 0, 366832, tzinfo=UTC)),
    ("2025-01-03", datetime(2025, 1, 3, tzinfo=UTC)),
    # epoch seconds, as time.time() gives them: text, JSON int, JSON number (Decimal)
    ("1735862698.123", T),
    (Decimal("1735862698.123"), T),
    (1735862698, T.replace(microsecond=0)),
    ("1735862698", T.replace(microsecond=0)),
    # milliseconds, as Java's currentTimeMillis
    (1735862698123, T),
    ("1735862698123", T),
    (Decimal("1735862698123.5"), T + timedelta(microseconds=500)),
    # microseconds, VoltDB's TIMESTAMP unit
    (1735862698123000, T),
    (" 1735862698123000 ", T),
    # fractions of a microsecond round to the nearest (half to even)
    (Decimal("1735862698.1230004"), T),
    (Decimal("1735862698.1230006"), T + timedelta(microseconds=1)),
    (Decimal("1735862698123000.5"), T),
    # the edges of each reading
    (946684800, datetime(2000, 1, 1, tzinfo=UTC)),
    (946684800000, datetime(2000, 1, 1, tzinfo=UTC)),
    (946684800000000, datetime(2000, 1, 1, tzinfo=UTC)),
    (Decimal("7258118399.999999"), datetime(2199, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
    (7258118399999, datetime(2199, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)),
    (7258118399999999, datetime(2199, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
])
def test_each_form_is_its_exact_instant(value, expected):
    parsed = parse_timestamp(value)
    assert parsed == expected
    assert parsed.utcoffset() is not None


def test_an_offset_is_kept():
    parsed = parse_timestamp("2025-01-03T01:04:58.123+01:00")
    assert parsed.utcoffset() == timedelta(hours=1)
    assert parsed.tzinfo == timezone(timedelta(hours=1))


@pytest.mark.parametrize("value, reason", [
    (0, f"timestamp 0 {OUTSIDE}"),
    ("0", f"timestamp 0 {OUTSIDE}"),
    (-5, f"timestamp -5 {OUTSIDE}"),
    ("-1735862698", f"timestamp -1735862698 {OUTSIDE}"),
    ("1e30", f"timestamp 1e30 {OUTSIDE}"),
    ("1e999999999999999999999", "timestamp 1e999999999999999999999 is not a number metro reads"),
    (Decimal("1E+30"), f"timestamp 1E+30 {OUTSIDE}"),
    # between the readings: 2200 as seconds, before 2000 as milliseconds
    (10**10, f"timestamp 10000000000 {OUTSIDE}"),
    (Decimal("7258118399.9999996"), "timestamp 7258118399.9999996 is outside"
                                    " 2000-01-01..2200-01-01 (UTC)"),
    (946684799, f"timestamp 946684799 {OUTSIDE}"),
    (7258118400000000, f"timestamp 7258118400000000 {OUTSIDE}"),
    (10**400, "timestamp 100000000000000000...000000000000000000 (401 characters) " + OUTSIDE),
    ("infinity", "timestamp 'infinity' is neither ISO 8601 nor an epoch number"),
    ("nan", "timestamp 'nan' is neither ISO 8601 nor an epoch number"),
    ("NaN", "timestamp 'NaN' is neither ISO 8601 nor an epoch number"),
    (Decimal("NaN"), "timestamp NaN is not a finite number"),
    (Decimal("Infinity"), "timestamp Infinity is not a finite number"),
    (float("nan"), "timestamp must be ISO 8601 text or an epoch number, got nan"),
    (True, "timestamp must be ISO 8601 text or an epoch number, got True"),
    ("0001-01-01T00:00:00", "timestamp '0001-01-01T00:00:00' is outside 2000-01-01..2200-01-01"
                            " (UTC)"),
    ("1999-12-31T23:59:59.999999Z", "timestamp '1999-12-31T23:59:59.999999Z' is outside"
                                    " 2000-01-01..2200-01-01 (UTC)"),
    ("2199-12-31T23:00:00-05:00", "timestamp '2199-12-31T23:00:00-05:00' is outside"
                                  " 2000-01-01..2200-01-01 (UTC)"),
    ("9999-12-31T23:59:59", "timestamp '9999-12-31T23:59:59' is outside 2000-01-01..2200-01-01"
                            " (UTC)"),
    ("1735862698,123", "timestamp '1735862698,123' is neither ISO 8601 nor an epoch number"),
    ("1_735_862_698", "timestamp '1_735_862_698' is neither ISO 8601 nor an epoch number"),
    ("\u0661\u0667\u0663\u0665\u0668\u0666\u0662\u0666\u0669\u0668",  # Arabic-Indic digits
     "timestamp '\u0661\u0667\u0663\u0665\u0668\u0666\u0662\u0666\u0669\u0668' is neither"
     " ISO 8601 nor an epoch number"),
    ("", "timestamp '' is neither ISO 8601 nor an epoch number"),
])
def test_absurd_timestamps_are_refused_with_a_reason(value, reason):
    with pytest.raises(InvalidMessage) as error:
        parse_timestamp(value)
    assert str(error.value) == reason


def test_the_kafka_record_timestamp_fills_in_an_absent_or_empty_one():
    ms = 1735862698123
    assert record_timestamp(ms) == T
    assert record_timestamp(-1) is None
    assert record_timestamp(None) is None
    for value in (b"42,2000,3", b"42,2000,3,", b"42,2000,3, ",
                  b'{"card_id": 42, "amount": 2000, "station_id": 3}',
                  b'{"card_id": 42, "amount": 2000, "station_id": 3, "ts": null}',
                  b'{"card_id": 42, "amount": 2000, "station_id": 3, "timestamp": ""}'):
        assert parse_message("RECHARGE", value, ms).ts == T
        assert parse_message("RECHARGE", value).ts is None
    # a timestamp in the message wins over the record's
    assert parse_message("RECHARGE", b"42,2000,3,1735862698", ms).ts == T.replace(microsecond=0)
    with pytest.raises(InvalidMessage) as error:
        parse_message("RECHARGE", b"42,2000,3", 1)
    assert str(error.value) == ("Kafka record timestamp 1 ms (1970-01-01T00:00:00.001000+00:00)"
                                " is outside 2000-01-01..2200-01-01 (UTC)")


def test_through_kafka_each_message_gets_its_own_instant(db, conn, stations, kafka,
                                                        kafka_producer, start_bridge):
    """Recharges without a timestamp are recorded at their Kafka record's timestamp (they
    used to share the bridge's transaction time); the other forms at their exact instant."""
    add_card(conn, 42, balance=0, notify=0)
    # VoltDB's stations.csv starts with station 0; its TrainProducer numbers trains from 0.
    conn.execute("INSERT INTO metro.stations VALUES (0, 'Airport', 250, 169835)")
    conn.execute("INSERT INTO metro.trains VALUES (0, 'Train 0')")
    skip_inbound_backlog(db, kafka)
    base_ms = int(time.time() * 1000) - 60_000
    instant = datetime.fromtimestamp(base_ms / 1000, UTC)
    sent = [
        kafka_producer.send("RECHARGE", b"42,100,3", partition=0, timestamp_ms=base_ms),
        kafka_producer.send("RECHARGE", b"42,101,3,", partition=0, timestamp_ms=base_ms + 1),
        kafka_producer.send("RECHARGE", b'{"card_id": 42, "amount": 102, "station_id": 3}',
                            partition=1, timestamp_ms=base_ms + 1500),
        kafka_producer.send("RECHARGE", b"42,103,3,1735862698.123", partition=0),
        kafka_producer.send("RECHARGE", b"42,104,3,1735862698124", partition=0),
        kafka_producer.send("RECHARGE", b'{"card_id": 42, "amount": 105, "station_id": 3,'
                                        b' "ts": 1735862698.125}', partition=0),
        kafka_producer.send("RECHARGE", b"42,106,3,1735862698126000", partition=0),
        kafka_producer.send("RECHARGE", b"42,107,3,2025-01-03 00:04:58.127", partition=0),
        kafka_producer.send("RECHARGE", b"42,900,3,0", partition=0),
        kafka_producer.send("RECHARGE", b"42,901,3", partition=0, timestamp_ms=1),
        kafka_producer.send("TRAINTOPIC", b"5,6,1,2026-11-30 07:55:00.366832"),
        kafka_producer.send("TRAINTOPIC", b"0,0,0,2026-11-30 07:56:00.5"),
    ]
    meta = [future.get(timeout=10) for future in sent]
    bridge = start_bridge(db)
    wait_until(lambda: conn.execute("SELECT sum(applied + dead_lettered)"
                                    " FROM metro.bridge_inbound_offsets").fetchone()[0] == 12,
               30, "twelve messages applied or dead-lettered")
    assert bridge.terminate() == 0

    assert conn.execute("SELECT amount, ts FROM metro.card_events WHERE card_id = 42"
                        " ORDER BY amount").fetchall() == [
        (100, instant),
        (101, instant + timedelta(milliseconds=1)),
        (102, instant + timedelta(milliseconds=1500)),
        (103, T),
        (104, T + timedelta(milliseconds=1)),
        (105, T + timedelta(milliseconds=2)),
        (106, T + timedelta(milliseconds=3)),
        (107, T + timedelta(milliseconds=4)),
    ]
    assert balance(conn, 42) == sum(range(100, 108))
    assert conn.execute("SELECT train_id, station_id, activity_type, ts FROM metro.train_events"
                        " ORDER BY ts").fetchall() == [
        (5, 6, 1, datetime(2026, 11, 30, 7, 55, 0, 366832, tzinfo=UTC)),
        (0, 0, 0, datetime(2026, 11, 30, 7, 56, 0, 500000, tzinfo=UTC))]
    assert conn.execute("SELECT kafka_offset, reason FROM metro.bridge_dead_letters"
                        " ORDER BY kafka_offset").fetchall() == [
        (meta[8].offset, f"timestamp 0 {OUTSIDE}"),
        (meta[9].offset, "Kafka record timestamp 1 ms (1970-01-01T00:00:00.001000+00:00) is"
                         " outside 2000-01-01..2200-01-01 (UTC)"),
    ]

"""TRAINTOPIC, RECHARGE and transaction_topic into record_train_event, recharge_card and
evaluate_transaction: applied once even when Kafka delivers again, bad messages (whatever their
bytes) dead-lettered without blocking what follows, offsets mirrored to the consumer group."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import psycopg
from factories import add_card, at, balance
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata
from kafka_fixtures import (
    group_offsets,
    skip_inbound_backlog,
    stored_offsets,
    wait_until,
)

from metro.bridge.inbound import CONSUMER_GROUP, apply_records
from metro.topics import INBOUND_TOPICS


def offsets(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute("SELECT topic, kafka_partition, next_offset, applied, dead_lettered"
                        " FROM metro.bridge_inbound_offsets WHERE applied + dead_lettered > 0"
                        " ORDER BY topic, kafka_partition").fetchall()


def test_messages_are_applied_and_bad_ones_dead_lettered(db, conn, stations, kafka,
                                                         kafka_producer, start_bridge):
    add_card(conn, 42, balance=100, notify=0)
    skip_inbound_backlog(db, kafka)
    bridge = start_bridge(db)
    bridge.wait_for_output("consuming TRAINTOPIC, RECHARGE")
    sent = [
        kafka_producer.send("TRAINTOPIC", b"1,3,0,2026-11-02T08:00:00Z"),
        kafka_producer.send("TRAINTOPIC", b"1,3,departed,2026-11-02T08:01:00Z"),
        kafka_producer.send("TRAINTOPIC", b"1,99,1,2026-11-02T08:02:00Z"),
        kafka_producer.send("TRAINTOPIC", b'{"train_id": 1, "station_id": 3,'
                                          b' "activity_type": 1, "ts": 1793606520000000}'),
        kafka_producer.send("RECHARGE", b"42,2000,3,2026-11-02T08:05:00Z", partition=0),
        kafka_producer.send("RECHARGE", b"42,-5,3", partition=0),
        kafka_producer.send("RECHARGE", b'{"card_id": 42, "amount": 500, "station_id": 4,'
                                        b' "ts": "2026-11-02T08:06:00Z"}', partition=1),
    ]
    meta = [future.get(timeout=10) for future in sent]
    wait_until(lambda: conn.execute("SELECT sum(applied + dead_lettered)"
                                    " FROM metro.bridge_inbound_offsets").fetchone()[0] == 7,
               30, "seven messages applied or dead-lettered")
    assert bridge.terminate() == 0

    assert conn.execute("SELECT train_id, station_id, activity_type, ts FROM metro.train_events"
                        " ORDER BY ts").fetchall() == [(1, 3, 0, at(0)), (1, 3, 1, at(minutes=2))]
    assert balance(conn, 42) == 100 + 2000 + 500
    assert conn.execute("SELECT station_id, amount, ts FROM metro.card_events WHERE card_id = 42"
                        " ORDER BY ts").fetchall() == [(3, 2000, at(minutes=5)),
                                                      (4, 500, at(minutes=6))]
    dead = conn.execute("SELECT topic, kafka_partition, kafka_offset, value, reason"
                        " FROM metro.bridge_dead_letters"
                        " ORDER BY topic, kafka_partition, kafka_offset").fetchall()
    assert dead == [
        ("RECHARGE", 0, meta[5].offset, b"42,-5,3",
         "MT003 Recharge amount must be a positive number of cents: -5"),
        ("TRAINTOPIC", 0, meta[1].offset, b"1,3,departed,2026-11-02T08:01:00Z",
         "activity_type must be an integer, got 'departed'"),
        ("TRAINTOPIC", 0, meta[2].offset, b"1,99,1,2026-11-02T08:02:00Z",
         "MT001 Unknown station: 99"),
    ]
    start = {m.topic_partition: m.offset for m in reversed(meta)}
    assert offsets(conn) == [
        ("RECHARGE", 0, start[TopicPartition("RECHARGE", 0)] + 2, 1, 1),
        ("RECHARGE", 1, start[TopicPartition("RECHARGE", 1)] + 1, 1, 0),
        ("TRAINTOPIC", 0, start[TopicPartition("TRAINTOPIC", 0)] + 4, 2, 2),
    ]


def test_a_redelivered_message_is_applied_once(db, conn, stations, kafka, kafka_producer):
    add_card(conn, 43, balance=0, notify=0)
    skip_inbound_backlog(db, kafka)
    first = kafka_producer.send("RECHARGE", b"43,1000,2", partition=0).get(timeout=10)
    kafka_producer.send("RECHARGE", b"43,,2", partition=0).get(timeout=10)
    tp = TopicPartition("RECHARGE", 0)

    def deliver() -> list:
        """What Kafka hands a consumer that (re)starts at the first message."""
        consumer = KafkaConsumer(bootstrap_servers=kafka, group_id=None)
        try:
            consumer.assign([tp])
            consumer.seek(tp, first.offset)
            records: list = []
            wait_until(lambda: records.extend(consumer.poll(timeout_ms=500).get(tp, []))
                       or len(records) >= 2, 20, "two RECHARGE records")
            return records[:2]
        finally:
            consumer.close()

    with psycopg.connect(db, autocommit=True) as applier:
        result = apply_records(applier, "RECHARGE", 0, deliver())
        assert (result.applied, result.dead_lettered, result.skipped) == (1, 1, 0)
        again = apply_records(applier, "RECHARGE", 0, deliver())
        assert (again.applied, again.dead_lettered, again.skipped) == (0, 0, 2)
    assert balance(conn, 43) == 1000
    assert conn.execute("SELECT count(*) FROM metro.card_events WHERE card_id = 43").fetchone() \
        == (1,)
    assert conn.execute("SELECT kafka_offset, reason FROM metro.bridge_dead_letters").fetchall() \
        == [(first.offset + 1, "empty field: amount")]
    assert conn.execute("SELECT next_offset, applied, dead_lettered FROM"
                        " metro.bridge_inbound_offsets WHERE topic = 'RECHARGE'"
                        " AND kafka_partition = 0").fetchone() == (first.offset + 2, 1, 1)


def inbound_group_offsets(bootstrap: str) -> dict[tuple[str, int], int]:
    return {key: offset for key, offset in group_offsets(bootstrap, CONSUMER_GROUP).items()
            if key[0] in INBOUND_TOPICS}


# (topic, value, reason): values that once stopped their partition for good.
BAD = [
    ("RECHARGE", b"400000,1,1,\xc2\xb2",
     "timestamp '\u00b2' is neither ISO 8601 nor an epoch number"),
    ("RECHARGE", b"42," + b"9" * 5000 + b",3",
     "amount 999999999999999999...999999999999999999 (5000 characters) does not fit in 32 bits"),
    ("RECHARGE", b"[" * 100_000, "value is not valid JSON: nested too deeply"),
    ("RECHARGE", b'{"a":' * 100_000, "value is not valid JSON: nested too deeply"),
    ("RECHARGE", b"42,20\n00,3", "value is not one CSV line: new-line character seen in unquoted"
                                 " field"),
    ("RECHARGE", b"\xff\xfe42,2000,3", "value is not UTF-8 text"),
    ("RECHARGE", b"", "value is empty"),
    ("RECHARGE", None, "value is empty (tombstone)"),
    ("RECHARGE", b"[42, 2000, 3]", "value is a JSON array, not a JSON object"),
    ("RECHARGE", b"42,2000,3\x00", "value contains a NUL character"),
    ("RECHARGE", b"42,2000,3,1e30", "timestamp 1e30 is outside 2000-01-01..2200-01-01 (UTC) read"
                                   " as epoch seconds, milliseconds or microseconds"),
    ("TRAINTOPIC", b"1,3,0,\xc2\xb2", "timestamp '\u00b2' is neither ISO 8601 nor an epoch number"),
    ("TRAINTOPIC", b'{"train_id": 1, "station_id": 3, "activity_type": 0, "ts": 0}',
     "timestamp 0 is outside 2000-01-01..2200-01-01 (UTC) read as epoch seconds, milliseconds"
     " or microseconds"),
    ("transaction_topic", b'{"transaction_id": "b-1", "account_id": "7", "amount": '
                          + b"1" * 5000 + b"}",
     # the function's reason, cut at 1,000 characters
     "MT003 Transaction amount must be positive, below 1,000,000,000,000, with at most two"
     " decimals: " + "1" * 902 + "..."),
    ("transaction_topic", b'{"transaction_id": "b-2\\u0000", "account_id": "7", "amount": 1}',
     "transaction_id contains a NUL character"),
    ("transaction_topic", b'[{"transaction_id": "b-3", "account_id": "7", "amount": 1}]',
     "value is a JSON array, not a JSON object"),
]


def test_no_bad_message_stops_anything(db, conn, stations, kafka, payment_topic,
                                       kafka_producer, start_bridge):
    """Each bad message is dead-lettered with its reason; the good ones behind it, on its
    own partition and on the other topics, are applied; the consumer group shows the
    offsets PostgreSQL stored."""
    add_card(conn, 42, balance=100, notify=0)
    skip_inbound_backlog(db, kafka)
    bridge = start_bridge(db)
    bridge.wait_for_output("consuming TRAINTOPIC, RECHARGE, transaction_topic")
    bad = [kafka_producer.send(topic, value, key=b"k", partition=0) for topic, value, _ in BAD]
    good = [
        kafka_producer.send("RECHARGE", b"42,2000,3,2026-11-02T08:05:00Z", partition=0),
        kafka_producer.send("TRAINTOPIC", b"1,3,0,2026-11-02T08:00:00Z", partition=0),
        kafka_producer.send("transaction_topic", b'{"transaction_id": "g-1", "account_id": "7",'
                            b' "amount": 12.5, "timestamp": 1793606400}', partition=0),
    ]
    bad_meta = [future.get(timeout=10) for future in bad]
    [future.get(timeout=10) for future in good]
    wait_until(lambda: conn.execute("SELECT sum(applied + dead_lettered)"
                                    " FROM metro.bridge_inbound_offsets").fetchone()[0]
               == len(BAD) + len(good), 60, "every message applied or dead-lettered")
    wait_until(lambda: inbound_group_offsets(kafka) == stored_offsets(db), 15,
               "the consumer group to show the stored offsets")
    assert bridge.terminate() == 0
    assert "Traceback" not in bridge.output(), bridge.output()

    assert balance(conn, 42) == 100 + 2000
    assert conn.execute("SELECT train_id, station_id, activity_type, ts FROM metro.train_events"
                        ).fetchall() == [(1, 3, 0, at(0))]
    assert conn.execute("SELECT transaction_id, account_id::text, amount, ts, rule"
                        " FROM metro.risk_decisions").fetchall() == [
        ("g-1", "7", Decimal("12.50"), at(0), "default_pass")]
    dead = conn.execute("SELECT topic, kafka_partition, kafka_offset, value, reason"
                        " FROM metro.bridge_dead_letters ORDER BY id").fetchall()
    expected = [(topic, 0, meta.offset, value, reason)
                for (topic, value, reason), meta in zip(BAD, bad_meta, strict=True)]
    assert sorted(dead) == sorted(expected)
    # logged once each, at WARNING, with topic, partition and offset
    for topic, _, offset, _, reason in expected:
        assert bridge.output().count(
            f"WARNING metro.bridge.inbound: dead-lettered {topic}[0]@{offset}: {reason}") == 1
    assert inbound_group_offsets(kafka) == stored_offsets(db)


def test_a_start_takes_its_positions_from_postgresql_not_the_group(db, conn, stations, kafka,
                                                                  kafka_producer, start_bridge):
    add_card(conn, 44, balance=0, notify=0)
    behind = kafka_producer.send("RECHARGE", b"44,1,3", partition=1).get(timeout=10)
    skip_inbound_backlog(db, kafka)
    ahead = kafka_producer.send("RECHARGE", b"44,1000,3", partition=0).get(timeout=10)
    # The group says the first was not applied and the second was: both wrong.
    group = KafkaConsumer(bootstrap_servers=kafka, group_id=CONSUMER_GROUP,
                          enable_auto_commit=False)
    try:
        group.commit({TopicPartition("RECHARGE", 1): OffsetAndMetadata(behind.offset, "", -1),
                      TopicPartition("RECHARGE", 0): OffsetAndMetadata(ahead.offset + 1, "", -1)})
    finally:
        group.close(autocommit=False)
    bridge = start_bridge(db)
    wait_until(lambda: balance(conn, 44) == 1000, 30, "the recharge after the stored offset")
    wait_until(lambda: inbound_group_offsets(kafka) == stored_offsets(db), 15,
               "the consumer group to show the stored offsets")
    assert bridge.terminate() == 0
    assert stored_offsets(db)[("RECHARGE", 1)] == behind.offset + 1
    assert stored_offsets(db)[("RECHARGE", 0)] == ahead.offset + 1
    assert conn.execute("SELECT amount FROM metro.card_events WHERE card_id = 44").fetchall() \
        == [(1000,)]


def example_serializer(value: dict) -> bytes:
    """The payment example's value_serializer, applied here: kafka-python 3 warns about a
    plain function as value_serializer, and the tests turn warnings into errors."""
    return json.dumps(value).encode()


def test_payments_with_integer_or_numeric_text_account_ids(db, conn, payment_topic,
                                                           start_bridge):
    """As the payment example's producer sends them (kafka-python, JSON serializer)."""
    skip_inbound_backlog(db, payment_topic)
    conn.execute("INSERT INTO metro.risk_tags VALUES (7, 3)")
    bridge = start_bridge(db)
    producer = KafkaProducer(bootstrap_servers=payment_topic, acks="all")
    try:
        for payment in ({"transaction_id": "n-1", "account_id": "7", "amount": 12000.0,
                         "timestamp": 1793606400.25},
                        {"transaction_id": "n-2", "account_id": 7, "amount": 0.1,
                         "timestamp": 1793606400250}):
            producer.send("transaction_topic", example_serializer(payment),
                          partition=0).get(timeout=10)
    finally:
        producer.close()
    wait_until(lambda: conn.execute("SELECT count(*) FROM metro.risk_decisions").fetchone()[0]
               == 2, 30, "two payments decided")
    assert bridge.terminate() == 0
    assert conn.execute("SELECT transaction_id, account_id::text, amount, ts, blocked, rule"
                        " FROM metro.risk_decisions ORDER BY transaction_id").fetchall() == [
        ("n-1", "7", Decimal("12000.00"), at(0.25), True, "high_risk_above_10000"),
        ("n-2", "7", Decimal("0.10"), at(0.25), False, "default_pass")]


def test_the_payment_example_is_decided(db, conn, payment_topic, start_bridge):
    """NEEDS evaluate_transaction(text, text, numeric, timestamptz): account123 is no bigint."""
    skip_inbound_backlog(db, payment_topic)
    conn.execute("INSERT INTO metro.risk_tags VALUES ('account123', 3)")
    bridge = start_bridge(db)
    producer = KafkaProducer(bootstrap_servers=payment_topic, acks="all")
    try:
        for payment in ({"transaction_id": "tx1001", "account_id": "account123",
                         "amount": 12000.0, "timestamp": 1735862698.123},
                        {"transaction_id": "tx1002", "account_id": "account456",
                         "amount": 12000.0, "timestamp": 1735862698.124}):
            producer.send("transaction_topic", example_serializer(payment)).get(timeout=10)
    finally:
        producer.close()
    wait_until(lambda: conn.execute("SELECT sum(applied + dead_lettered)"
                                    " FROM metro.bridge_inbound_offsets").fetchone()[0] == 2,
               30, "two payments applied or dead-lettered")
    assert bridge.terminate() == 0
    assert conn.execute("SELECT reason FROM metro.bridge_dead_letters").fetchall() == []
    assert conn.execute("SELECT transaction_id, account_id, amount, ts, blocked, rule"
                        " FROM metro.risk_decisions ORDER BY transaction_id").fetchall() == [
        ("tx1001", "account123", Decimal("12000.00"),
         datetime(2025, 1, 3, 0, 4, 58, 123000, tzinfo=UTC), True, "high_risk_above_10000"),
        ("tx1002", "account456", Decimal("12000.00"),
         datetime(2025, 1, 3, 0, 4, 58, 124000, tzinfo=UTC), False, "default_pass")]


def test_a_function_the_bridge_may_not_call_holds_its_messages_back(
        db, conn, stations, kafka, kafka_producer, start_bridge, server_dsn):
    # EXECUTE revoked from metro_bridge: no message could be applied, so none is set aside
    # as a dead letter; they wait, and are applied once the grant is back.
    from psycopg.conninfo import make_conninfo
    from roles import login_role

    recharge = "metro.recharge_card(bigint, integer, integer, timestamptz)"
    add_card(conn, 42, balance=100, notify=0)
    skip_inbound_backlog(db, kafka)
    with login_role(server_dsn, "bridge", "metro_bridge") as role:
        conn.execute(f"REVOKE EXECUTE ON FUNCTION {recharge} FROM metro_bridge")
        bridge = start_bridge(make_conninfo(db, user=role))
        bridge.wait_for_output("consuming TRAINTOPIC, RECHARGE")
        kafka_producer.send("RECHARGE", b"42,2000,3", partition=0).get(timeout=10)
        bridge.wait_for_output("permission denied for function recharge_card")
        assert conn.execute("SELECT count(*) FROM metro.bridge_dead_letters").fetchone() == (0,)
        conn.execute(f"GRANT EXECUTE ON FUNCTION {recharge} TO metro_bridge")
        wait_until(lambda: balance(conn, 42) == 2100, 60, "the recharge once allowed")
        assert bridge.terminate() == 0
    assert conn.execute("SELECT count(*) FROM metro.bridge_dead_letters").fetchone() == (0,)
    assert offsets(conn) == [("RECHARGE", 0, stored_offsets(db)[("RECHARGE", 0)], 1, 0)]


def test_a_log_that_went_back_below_the_stored_offset_is_told_not_applied_silently(
        db, conn, stations, kafka, kafka_producer, start_bridge):
    # As after RECHARGE was deleted and created again: the stored offset is past the end
    # of the partition's log, the consumer starts over at its beginning.
    import re

    add_card(conn, 42, balance=100, notify=0)
    skip_inbound_backlog(db, kafka)
    sent = kafka_producer.send("RECHARGE", b"42,2000,3", partition=0).get(timeout=10)
    conn.execute("UPDATE metro.bridge_inbound_offsets SET next_offset = %s"
                 " WHERE topic = 'RECHARGE' AND kafka_partition = 0", (sent.offset + 100,))
    bridge = start_bridge(db)
    bridge.wait_for_output("below the offset")
    assert bridge.terminate() == 0
    warning = next(line for line in bridge.output().splitlines() if "below the offset" in line)
    assert re.search(
        r"WARNING metro\.bridge\.inbound: RECHARGE\[0\]: skipped \d+ message\(s\) from offset"
        rf" 0 on, below the offset {sent.offset + 100} stored as applied: Kafka's log went"
        r" back \(the topic created again, or its log truncated\?\)\. To apply them, stop the"
        r" bridge and set next_offset of this partition in metro\.bridge_inbound_offsets to"
        r" 0$", warning), warning
    assert balance(conn, 42) == 100
    # The way out it names, from the message wanted.
    conn.execute("UPDATE metro.bridge_inbound_offsets SET next_offset = %s"
                 " WHERE topic = 'RECHARGE' AND kafka_partition = 0", (sent.offset,))
    bridge = start_bridge(db)
    wait_until(lambda: balance(conn, 42) == 2100, 30, "the recharge applied")
    assert bridge.terminate() == 0
    assert conn.execute("SELECT count(*) FROM metro.bridge_dead_letters").fetchone() == (0,)


def test_an_inbound_call_waits_for_a_held_card_half_a_second_at_a_time(
        db, conn, stations, kafka, kafka_producer, start_bridge):
    # A psql session holds card 42: the recharge fails on its lock timeout and is tried
    # again from the stored offset, and a stop meanwhile is not held up by it.
    add_card(conn, 42, balance=100, notify=0)
    skip_inbound_backlog(db, kafka)
    bridge = start_bridge(db)
    bridge.wait_for_output("consuming TRAINTOPIC, RECHARGE")
    with psycopg.connect(db) as holder:
        holder.execute("SELECT * FROM metro.cards WHERE card_id = 42 FOR UPDATE")
        kafka_producer.send("RECHARGE", b"42,2000,3", partition=0).get(timeout=10)
        bridge.wait_for_output("canceling statement due to lock timeout")
        assert bridge.terminate(timeout=10) == 0
    bridge = start_bridge(db)
    wait_until(lambda: balance(conn, 42) == 2100, 30, "the recharge once the card is free")
    assert bridge.terminate() == 0
    assert conn.execute("SELECT count(*) FROM metro.bridge_dead_letters").fetchone() == (0,)

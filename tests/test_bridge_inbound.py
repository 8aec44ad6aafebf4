"""TRAINTOPIC and RECHARGE into record_train_event and recharge_card: applied once even when
Kafka delivers again, bad messages dead-lettered without blocking what follows."""

from __future__ import annotations

import psycopg
from factories import add_card, at, balance
from kafka import KafkaConsumer, TopicPartition
from kafka_fixtures import skip_inbound_backlog, wait_until

from metro.bridge.inbound import apply_records


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

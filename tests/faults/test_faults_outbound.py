"""One row Kafka refuses never stops delivery: it is set aside in
metro.bridge_outbound_dead_letters, its stream moves on and the other streams never wait.
Card holder details are bounded, so a card cannot make such a row."""

from __future__ import annotations

import itertools
import json
import os
import threading
from pathlib import Path

import psycopg
import pytest
from commands import loader_command, metro
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka_fixtures import wait_until

from metro.bridge.outbound import Forwarder, new_producer

ALERT = ("INSERT INTO metro.card_alert_export (card_id, ts, station_name, name, phone, email,"
         " notify, alert_message) VALUES (%s, '2026-11-02 08:00:00+00', %s, 'Ada', NULL, NULL, 2,"
         " 'Insufficient Balance') RETURNING position")
FRAUD = ("INSERT INTO metro.fraud (trans_id, card_id, ts, station_id, activity_code, amount)"
         " VALUES (%s, 1, '2026-11-02 08:00:00+00', 1, 1, 250)")

PARCEL_TOPICS = itertools.count()


def dead_letters(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT stream, position, key, reason, length(value)"
                            " FROM metro.bridge_outbound_dead_letters ORDER BY id").fetchall()


def test_a_row_larger_than_kafka_takes_is_set_aside_and_nothing_waits(db, conn, start_bridge,
                                                                      topic_reader):
    alerts, frauds = topic_reader("CARD_ALERT_EXPORT"), topic_reader("FRAUD")
    before = conn.execute(ALERT, (7, "Harbor Gate")).fetchone()[0]
    # 1.5 MB: a station name nobody bounded (card names are, below).
    big = conn.execute(ALERT, (8, "x" * 1_500_000)).fetchone()[0]
    after = conn.execute(ALERT, (9, "Harbor Gate")).fetchone()[0]
    conn.execute(FRAUD, ("1_1",))
    bridge = start_bridge(db, "--no-inbound")
    assert [r.key for r in alerts.read(2)] == [b"7", b"9"]
    assert [int(dict(r.headers)["position"]) for r in alerts.records] == [before, after]
    assert [r.key for r in frauds.read(1)] == [b"1_1"]
    bridge.wait_for_output(f"Kafka refused card_alert_export row {big}, set aside in "
                           "metro.bridge_outbound_dead_letters")
    size = len(json.dumps({"card_id": 8}))  # the value is larger than 1.5 MB anyway
    assert size
    [(stream, position, key, reason, length)] = dead_letters(db)
    assert (stream, position, key) == ("card_alert_export", big, "8")
    assert reason.startswith("message of 1,500,") and reason.endswith(
        " bytes is larger than the 1,000,000 bytes the bridge sends")
    assert length > 1_500_000
    # The stream goes on: a later row is delivered too.
    conn.execute(ALERT, (10, "Harbor Gate"))
    assert [r.key for r in alerts.read(3)][-1] == b"10"
    wait_until(lambda: conn.execute("SELECT delivered FROM metro.bridge_cursors"
                                    " WHERE stream = 'card_alert_export'").fetchone() == (3,),
               10, "three alerts acknowledged")
    lines = metro(db, "bridge", "--status").stdout.splitlines()
    assert "outbound dead letters: 1 (SELECT * FROM metro.bridge_outbound_dead_letters)" in lines
    assert any(line.startswith(f"  card_alert_export: 1, last at position {big}: message of")
               for line in lines), lines
    assert bridge.terminate() == 0


def parcels_stream(conn: psycopg.Connection, kafka: str, notes: list[str]) -> str:
    """A stream metro.parcels to a topic whose messages may be 2,000 bytes at most, with a
    row per note (parcel ids p1, p2, ...); its topic."""
    topic = f"PARCELS_{os.getpid()}_{next(PARCEL_TOPICS)}"  # one per test: the broker outlives it
    admin = KafkaAdminClient(bootstrap_servers=kafka)
    try:
        admin.create_topics([NewTopic(topic, 1, 1, topic_configs={"max.message.bytes": "2000"})])
    finally:
        admin.close()
    conn.execute("""CREATE TABLE metro.parcels (
        position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
        parcel_id text NOT NULL, note text NOT NULL,
        sent_at timestamptz NOT NULL DEFAULT '2026-11-02 08:00:00+00')""")
    conn.execute("COMMENT ON TABLE metro.parcels IS 'test stream'")
    conn.execute("SELECT metro.register_stream('parcels', %s, 'parcel_id', 'sent_at')", (topic,))
    for number, note in enumerate(notes, start=1):
        conn.execute("INSERT INTO metro.parcels (parcel_id, note) VALUES (%s, %s)",
                     (f"p{number}", note))
    return topic


def test_a_row_the_broker_refuses_is_set_aside(db, conn, kafka, start_bridge, topic_reader):
    """A topic whose messages may be 2,000 bytes at most: the broker refuses a larger row."""
    reader = topic_reader(parcels_stream(conn, kafka, ["small", "y" * 5000, "small"]))
    bridge = start_bridge(db, "--no-inbound")
    assert [r.key for r in reader.read(2)] == [b"p1", b"p3"]
    wait_until(lambda: dead_letters(db), 30, "the refused row set aside")
    [(stream, position, key, reason, _)] = dead_letters(db)
    assert (stream, position, key) == ("parcels", 2, "p2")
    assert reason.startswith("Kafka refused the message: MessageSizeTooLargeError"), reason
    assert bridge.terminate() == 0


def test_rows_sent_again_one_at_a_time_take_a_new_producer_only_after_a_refusal(
        db, conn, kafka, topic_reader):
    """The broker refuses the record batch that holds a row too large for the topic, and
    the producer refuses what follows it: the rows are sent again one at a time. A new
    producer is made after each refusal only, and the lease is renewed as they go: with a
    new producer before every row, a batch of thousands took minutes and the lease could
    pass to another bridge meanwhile."""
    notes = ["small", "y" * 5000] + ["small"] * 28
    reader = topic_reader(parcels_stream(conn, kafka, notes))
    made: list[KafkaProducer] = []
    renewed: list[int] = []

    def another_producer() -> KafkaProducer:
        made.append(new_producer(kafka))
        return made[-1]

    with psycopg.connect(db, autocommit=True) as bridge:
        assert bridge.execute("SELECT metro.bridge_take_lease('test:1', interval '30 s')"
                              ).fetchone() == (True,)
        forwarder = Forwarder(bridge, new_producer(kafka), 100, threading.Event(),
                              lambda waited: None, new_producer=another_producer,
                              keep_lease=lambda: renewed.append(1))
        try:
            assert forwarder.cycle() == 30
        finally:
            forwarder.producer.close(timeout=5)
    assert [r.key for r in reader.read(29)] == [
        f"p{n}".encode() for n in range(1, 31) if n != 2]
    [(stream, position, key, reason, _)] = dead_letters(db)
    assert (stream, position, key) == ("parcels", 2, "p2")
    assert reason.startswith("Kafka refused the message: MessageSizeTooLargeError"), reason
    # One producer for the rows after the first refusal, one after p2's.
    assert len(made) == 2
    assert 2 <= len(renewed) <= 30


@pytest.mark.parametrize(("column", "limit"), [("name", 200), ("phone", 40), ("email", 320)])
def test_card_holder_details_are_bounded(conn, column, limit):
    conn.execute(f"INSERT INTO cards (card_id, {column}) VALUES (1, %s)", ("a" * limit,))
    with pytest.raises(psycopg.errors.CheckViolation) as error:
        conn.execute(f"INSERT INTO cards (card_id, {column}) VALUES (2, %s)", ("a" * (limit + 1),))
    assert error.value.diag.message_primary == (
        f'value for domain card_{column} violates check constraint'
        f' "card_{column}_at_most_{limit}_characters"')
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(f"UPDATE cards SET {column} = %s", ("a" * 1_500_000,))


def test_the_loader_reports_a_card_name_too_long(db, conn, tmp_path: Path):
    cards = tmp_path / "cards.csv"
    cards.write_text(f"1,1,0,1000,,Ada,555,ada@example.org,1\n"
                     f"2,1,0,1000,,{'B' * 1_500_000},555,b@example.org,1\n")
    result = loader_command(tmp_path, db, str(cards))
    assert conn.execute("SELECT card_id FROM cards").fetchall() == [(1,)]
    report = result.stdout + result.stderr + "".join(
        p.read_text() for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".log", ".txt"))
    assert 'violates check constraint "card_name_at_most_200_characters"' in report

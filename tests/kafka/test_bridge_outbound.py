"""Stream rows written by the functions reach FRAUD, CARD_ALERT_EXPORT and TRIPS with the
contract's key, JSON value and position header; the cursor and pruning follow Kafka's acks."""

from __future__ import annotations

import json

import psycopg
from factories import add_card, at, call
from kafka_fixtures import wait_until

from metro.bridge.runner import IDLE_KEY


def pending(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT sum(pending) FROM metro.bridge_lag()").fetchone()
    assert row is not None
    return int(row[0])


def decoded(records: list) -> list[tuple[str, dict, dict]]:
    return [(r.key.decode(), json.loads(r.value), dict(r.headers)) for r in records]


def test_every_stream_row_reaches_its_topic(db, conn, stations, start_bridge, topic_reader):
    readers = {topic: topic_reader(topic) for topic in ("FRAUD", "CARD_ALERT_EXPORT", "TRIPS")}
    add_card(conn, 7, balance=1000, notify=1, name="Ada Quill", phone="555-0142",
             email="ada@example.org")
    add_card(conn, 8, balance=100, notify=2, name="Bo Lantern", phone="555-0143", email=None)
    assert call(conn, "validate_entry", 7, 1, at(0)) == (True, "Remaining Balance: 7.50")
    assert call(conn, "process_exit", 7, 4, at(minutes=20))[0] is True
    assert call(conn, "validate_entry", 7, 2, at(minutes=30)) == (True, "Remaining Balance: 5.00")
    assert call(conn, "validate_entry", 7, 3, at(minutes=30)) == (False, "Fraudulent transaction")
    assert call(conn, "validate_entry", 8, 1, at(minutes=31)) == (
        False, "Card has insufficient balance: 1.00")

    bridge = start_bridge(db, "--no-inbound")
    fraud = decoded(readers["FRAUD"].read(1))
    alerts = decoded(readers["CARD_ALERT_EXPORT"].read(1))
    trips = decoded(readers["TRIPS"].read(1))
    assert bridge.terminate() == 0

    positions = {table: conn.execute(f"SELECT position FROM metro.{table}").fetchone()[0]
                 for table in ("fraud", "card_alert_export", "trips")}
    trans_id = f"7_{int(at(minutes=30).timestamp() * 1_000_000)}"
    assert fraud == [(trans_id, {
        "trans_id": trans_id, "card_id": 7, "ts": "2026-11-02T08:30:00+00:00", "station_id": 3,
        "activity_code": 1, "amount": 250}, {"position": str(positions["fraud"]).encode()})]
    assert alerts == [("8", {
        "card_id": 8, "ts": "2026-11-02T08:31:00+00:00", "station_name": "Harbor Gate",
        "name": "Bo Lantern", "phone": "555-0143", "email": None, "notify": 2,
        "alert_message": "Insufficient Balance"},
        {"position": str(positions["card_alert_export"]).encode()})]
    trip_id = conn.execute("SELECT trip_id FROM metro.trips").fetchone()[0]
    assert trips == [(str(trip_id), {
        "trip_id": trip_id, "card_id": 7, "entry_station": 1,
        "entry_ts": "2026-11-02T08:00:00+00:00", "exit_station": 4,
        "exit_ts": "2026-11-02T08:20:00+00:00"}, {"position": str(positions["trips"]).encode()})]
    cursors = conn.execute("SELECT stream, position, delivered FROM metro.bridge_cursors"
                           " ORDER BY stream").fetchall()
    assert cursors == [("card_alert_export", positions["card_alert_export"], 1),
                       ("fraud", positions["fraud"], 1), ("transaction_decisions", 0, 0),
                       ("trips", positions["trips"], 1)]
    assert pending(conn) == 0


def test_rows_written_while_running_follow_in_order_per_key(db, conn, stations, start_bridge,
                                                            topic_reader):
    reader = topic_reader("CARD_ALERT_EXPORT")
    add_card(conn, 9, balance=0, notify=1)
    bridge = start_bridge(db, "--no-inbound")
    bridge.wait_for_output("holding the lease")
    for minute in range(1, 21):
        assert call(conn, "recharge_card", 9, 100 * minute, 2, at(minutes=minute))[0] is True
    records = reader.read(20)
    assert [r.key for r in records] == [b"9"] * 20
    assert [json.loads(r.value)["alert_message"] for r in records] == [
        f"Recharged: {m}.00, Balance: {sum(range(1, m + 1))}.00" for m in range(1, 21)]
    positions = [int(dict(r.headers)["position"]) for r in records]
    assert positions == sorted(positions) and len(set(positions)) == 20
    assert bridge.terminate() == 0


def test_delivered_rows_are_pruned_after_the_retention(db, conn, start_bridge, topic_reader):
    reader = topic_reader("FRAUD")
    conn.execute("INSERT INTO metro.fraud (trans_id, card_id, ts, station_id, activity_code,"
                 " amount) SELECT n || '_1', n, now(), 1, 1, 250 FROM generate_series(1, 500) n")
    bridge = start_bridge(db, "--no-inbound", "--retention", "0s", "--prune-interval", "0.2")
    assert len(reader.read(500)) == 500
    wait_until(lambda: conn.execute("SELECT count(*) FROM metro.fraud").fetchone() == (0,), 30,
               "delivered fraud rows to be pruned")
    bridge.wait_for_output("pruned 500 delivered rows of fraud")
    assert bridge.terminate() == 0
    assert conn.execute("SELECT position, delivered FROM metro.bridge_cursors"
                        " WHERE stream = 'fraud'").fetchone() == (500, 500)


def test_pruning_keeps_rows_inside_the_retention_and_undelivered_ones(db, conn):
    conn.execute("INSERT INTO metro.fraud (trans_id, card_id, ts, station_id, activity_code,"
                 " amount) SELECT n || '_1', n, now(), 1, 1, 250 FROM generate_series(1, 10) n")
    rows = conn.execute("SELECT row_txid, row_position FROM metro.bridge_batch('fraud', '0', 0, 6)"
                        ).fetchall()
    assert [position for _, position in rows] == [1, 2, 3, 4, 5, 6]
    assert conn.execute("SELECT metro.bridge_ack('fraud', %s, %s, 6)", rows[-1]).fetchone() == (
        True,)
    # A cursor never moves back.
    assert conn.execute("SELECT metro.bridge_ack('fraud', %s, %s, 3)", rows[2]).fetchone() == (
        False,)
    assert conn.execute("SELECT * FROM metro.bridge_prune('1 hour', 1000)").fetchall() == [
        ("card_alert_export", 0), ("fraud", 0), ("transaction_decisions", 0), ("trips", 0)]
    assert conn.execute("SELECT * FROM metro.bridge_prune('0', 1000)").fetchall() == [
        ("card_alert_export", 0), ("fraud", 6), ("transaction_decisions", 0), ("trips", 0)]
    assert conn.execute("SELECT min(position), count(*) FROM metro.fraud").fetchone() == (7, 4)
    assert conn.execute("SELECT stream, pending FROM metro.bridge_lag() WHERE stream = 'fraud'"
                        ).fetchone() == ("fraud", 4)


def test_writers_notify_once_per_transaction_only_while_the_bridge_sleeps(db, conn):
    insert = ("INSERT INTO metro.trips (card_id, entry_station, entry_ts, exit_station, exit_ts)"
              " VALUES (%s, 1, now(), 2, now())")
    with psycopg.connect(db, autocommit=True) as listener:
        listener.execute("LISTEN metro_bridge")
        # Nobody sleeps on the idle lock (the bridge is busy or absent): no NOTIFY.
        conn.execute(insert, (1,))
        assert list(listener.notifies(timeout=0.5)) == []
        listener.execute("SELECT pg_advisory_lock(%s, %s)", IDLE_KEY)
        with conn.transaction():
            for n in range(3):
                conn.execute(insert, (n,))
        assert [(n.channel, n.payload) for n in listener.notifies(timeout=1)] == [
            ("metro_bridge", "trips")]
        conn.execute("UPDATE metro.bridge_settings SET notify = false")
        conn.execute(insert, (4,))
        assert list(listener.notifies(timeout=0.5)) == []


def test_a_writer_committing_keeps_the_bridge_from_sleeping(db, conn):
    writer = psycopg.connect(db)
    writer.execute("INSERT INTO metro.fraud (trans_id, card_id, ts, station_id, activity_code,"
                   " amount) VALUES ('1_1', 1, now(), 1, 1, 250)")
    # The writer did not notify and holds the idle lock shared until it commits.
    assert conn.execute("SELECT pg_try_advisory_lock(%s, %s)", IDLE_KEY).fetchone() == (False,)
    writer.commit()
    writer.close()
    assert conn.execute("SELECT pg_try_advisory_lock(%s, %s)", IDLE_KEY).fetchone() == (True,)

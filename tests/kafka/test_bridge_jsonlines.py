"""Without Kafka the bridge appends stream rows to a JSON-lines file, with the same cursor:
every row once, in order, the cursor moved only after the file was written."""

from __future__ import annotations

import psycopg
from factories import add_card, at, call
from file_bridge import FileBridge, lines
from kafka_fixtures import wait_until


def pending(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT sum(pending) FROM metro.bridge_lag()").fetchone()
    assert row is not None
    return int(row[0])


def test_stream_rows_go_to_the_file_once_each(db, conn, stations, tmp_path):
    path = tmp_path / "out" / "streams.jsonl"
    add_card(conn, 7, balance=1000, notify=1, name="Ada Quill", phone="555-0142",
             email="ada@example.org")
    assert call(conn, "validate_entry", 7, 1, at(0))[0] is True
    assert call(conn, "validate_entry", 7, 3, at(0.5)) == (False, "Fraudulent transaction")

    bridge = FileBridge(db, path)
    wait_until(lambda: pending(conn) == 0, 20, "the fraud row written before the start")
    assert call(conn, "process_exit", 7, 4, at(minutes=20))[0] is True
    assert call(conn, "recharge_card", 7, 500, 2, at(minutes=21))[0] is True
    wait_until(lambda: pending(conn) == 0, 20, "the trip and the alert")
    bridge.close()

    position = {table: conn.execute(f"SELECT position FROM metro.{table}").fetchone()[0]
                for table in ("fraud", "card_alert_export", "trips")}
    trip_id = conn.execute("SELECT trip_id FROM metro.trips").fetchone()[0]
    trans_id = f"7_{int(at(0.5).timestamp() * 1_000_000)}"
    assert sorted(lines(path), key=lambda line: line["topic"]) == [
        {"topic": "CARD_ALERT_EXPORT", "key": "7", "position": position["card_alert_export"],
         "value": {"card_id": 7, "ts": "2026-11-02T08:21:00+00:00", "station_name": "Fishmarket",
                   "name": "Ada Quill", "phone": "555-0142", "email": "ada@example.org",
                   "notify": 1, "alert_message": "Recharged: 5.00, Balance: 12.50"}},
        {"topic": "FRAUD", "key": trans_id, "position": position["fraud"],
         "value": {"trans_id": trans_id, "card_id": 7, "ts": "2026-11-02T08:00:00.5+00:00",
                   "station_id": 3, "activity_code": 1, "amount": 250}},
        {"topic": "TRIPS", "key": str(trip_id), "position": position["trips"],
         "value": {"trip_id": trip_id, "card_id": 7, "entry_station": 1,
                   "entry_ts": "2026-11-02T08:00:00+00:00", "exit_station": 4,
                   "exit_ts": "2026-11-02T08:20:00+00:00"}},
    ]
    assert conn.execute("SELECT stream, delivered FROM metro.bridge_cursors"
                        " WHERE stream IN ('fraud', 'card_alert_export', 'trips') ORDER BY stream"
                        ).fetchall() == [("card_alert_export", 1), ("fraud", 1), ("trips", 1)]
    assert ("forwarding card_alert_export, fraud, transaction_decisions, trips"
            in bridge.messages[0])
    assert f" to {path}" in bridge.messages[0]
    assert "consuming" not in bridge.messages[0]

    # A second bridge starts from the cursor: it appends only what is new.
    bridge = FileBridge(db, path)
    assert call(conn, "recharge_card", 7, 500, 2, at(minutes=22))[0] is True
    wait_until(lambda: pending(conn) == 0, 20, "the second alert")
    bridge.close()
    written = lines(path)
    assert len(written) == 4
    assert written[-1]["value"]["alert_message"] == "Recharged: 5.00, Balance: 17.50"

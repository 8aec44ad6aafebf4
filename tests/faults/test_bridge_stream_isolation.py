"""A stream the database refuses to read stops only itself: its table locked by a long
VACUUM FULL or ALTER TABLE, or the bridge's SELECT on it revoked. The other streams are
delivered meanwhile; the refused one rests on its own back-off and, once readable, is
delivered too, every row exactly once."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import psycopg
from dashboard_fixtures import as_user
from file_bridge import FileBridge, lines
from kafka_fixtures import wait_until
from roles import login_role

ALERT = ("INSERT INTO metro.card_alert_export (card_id, ts, station_name, name, phone, email,"
         " notify, alert_message) VALUES (%s, '2026-11-02 08:00:00+00', 'Harbor Gate', 'Ada',"
         " NULL, NULL, 2, 'Insufficient Balance')")
FRAUD = ("INSERT INTO metro.fraud (trans_id, card_id, ts, station_id, activity_code, amount)"
         " VALUES (%s, 1, '2026-11-02 08:00:00+00', 1, 1, 250)")
TRIP = ("INSERT INTO metro.trips (card_id, entry_station, entry_ts, exit_station, exit_ts)"
        " VALUES (%s, 1, '2026-11-02 08:00:00+00', 2, '2026-11-02 08:20:00+00')")


def keys(path, topic: str) -> list[str]:
    return [line["key"] for line in lines(path) if line["topic"] == topic]


def last_error(conn: psycopg.Connection) -> str:
    row = conn.execute("SELECT last_error FROM metro.bridge_state").fetchone()
    return row[0] if row and row[0] else ""


def test_a_locked_stream_table_holds_back_only_its_own_stream(db, conn, tmp_path):
    path = tmp_path / "streams.jsonl"
    conn.execute(ALERT, (7,))
    conn.execute(ALERT, (8,))
    conn.execute(FRAUD, ("1_1",))
    with psycopg.connect(db) as locker:
        # As a VACUUM FULL of fraud would, for as long as it runs. (Rows committed after
        # it began wait anyway: its transaction holds the commit horizon back.)
        locker.execute("LOCK TABLE metro.fraud IN ACCESS EXCLUSIVE MODE")
        # One row a batch: not one batch and then a stall, delivery goes on.
        bridge = FileBridge(db, path, batch_size=1)
        try:
            wait_until(lambda: keys(path, "CARD_ALERT_EXPORT") == ["7", "8"], 15,
                       "the alerts while fraud is locked")
            assert keys(path, "FRAUD") == []
            assert ("cannot read fraud (canceling statement due to lock timeout); trying it"
                    " again in 0.5 s, the other streams go on") in bridge.messages
            assert last_error(conn).startswith("cannot read fraud (canceling statement due to"
                                               " lock timeout)")
            locker.rollback()
            wait_until(lambda: keys(path, "FRAUD") == ["1_1"], 15, "fraud once unlocked")
            assert "fraud goes on again" in bridge.messages
        finally:
            bridge.close()
    assert Counter((line["topic"], line["key"]) for line in lines(path)) == {
        ("CARD_ALERT_EXPORT", "7"): 1, ("CARD_ALERT_EXPORT", "8"): 1, ("FRAUD", "1_1"): 1}
    assert conn.execute("SELECT stream, delivered FROM metro.bridge_cursors"
                        " WHERE stream IN ('card_alert_export', 'fraud') ORDER BY stream"
                        ).fetchall() == [("card_alert_export", 2), ("fraud", 1)]


def test_a_stream_the_bridge_may_not_read_rests_and_the_bridge_keeps_running(
        db, conn, server_dsn, tmp_path):
    path = tmp_path / "streams.jsonl"
    conn.execute(TRIP, (5,))
    conn.execute(FRAUD, ("1_1",))
    conn.execute("REVOKE SELECT ON metro.trips FROM metro_bridge")
    with login_role(server_dsn, "bridge", "metro_bridge") as name:
        bridge = FileBridge(as_user(db, name), path)
        try:
            wait_until(lambda: keys(path, "FRAUD") == ["1_1"], 15, "the fraud row")
            wait_until(lambda: any(m.startswith("cannot read trips") for m in bridge.messages),
                       15, "the refusal")
            refusal = next(m for m in bridge.messages if m.startswith("cannot read trips"))
            assert refusal == ("cannot read trips (permission denied for table trips); trying"
                               " it again in 0.5 s, the other streams go on")
            conn.execute(FRAUD, ("1_2",))
            wait_until(lambda: keys(path, "FRAUD") == ["1_1", "1_2"], 15, "a later fraud row")
            # It rests on a back-off of its own: retried, not hammered, and still running.
            wait_until(lambda: any("trying it again in 2.0 s" in m for m in bridge.messages),
                       15, "a longer wait after the third refusal")
            assert bridge.thread.is_alive()
            assert keys(path, "TRIPS") == []
            conn.execute("GRANT SELECT ON metro.trips TO metro_bridge")
            wait_until(lambda: len(keys(path, "TRIPS")) == 1, 15, "the trip once granted")
            assert "trips goes on again" in bridge.messages
        finally:
            bridge.close()
    assert Counter(line["topic"] for line in lines(path)) == {"FRAUD": 2, "TRIPS": 1}


def test_pruning_that_cannot_take_its_lock_waits_for_its_next_round(db, conn, tmp_path):
    path = tmp_path / "streams.jsonl"
    conn.execute(FRAUD, ("1_1",))
    # Delivered rows are pruned at once, every 0.3 s.
    bridge = FileBridge(db, path, retention=timedelta(0), prune_interval=0.3)
    try:
        wait_until(lambda: keys(path, "FRAUD") == ["1_1"], 15, "the fraud row")
        with psycopg.connect(db) as locker:
            locker.execute("LOCK TABLE metro.fraud IN ACCESS EXCLUSIVE MODE")
            wait_until(lambda: any(m.startswith("pruning delivered rows failed (canceling"
                                                " statement due to lock timeout); trying again")
                                   for m in bridge.messages), 15, "a pruning round refused")
        # Unlocked: the same session prunes, and delivers what comes next.
        wait_until(lambda: conn.execute("SELECT count(*) FROM metro.fraud").fetchone() == (0,),
                   15, "the delivered row pruned")
        conn.execute(FRAUD, ("1_2",))
        wait_until(lambda: keys(path, "FRAUD") == ["1_1", "1_2"], 15, "a later fraud row")
        assert sum(m.startswith("holding the lease") for m in bridge.messages) == 1
    finally:
        bridge.close()

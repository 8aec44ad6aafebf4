"""In commit order per key: a transaction that took its transaction id first but wrote a
card's row last (it waited for the card's lock) commits after the other, and Kafka sees the
two rows in that order; with interleaved writers no key ever sees an inversion. And only
once its commit is durable."""

from __future__ import annotations

import random
import threading
import time

import psycopg
from factories import add_card
from file_bridge import FileBridge, lines
from kafka_fixtures import wait_until
from psycopg import sql

ALERTS = ("SELECT position, card_id, alert_message FROM metro.card_alert_export"
          " ORDER BY position")


def test_a_card_written_by_an_older_transaction_last_comes_out_last(db, conn, stations):
    add_card(conn, 7, balance=0, notify=2)
    with psycopg.connect(db) as older:
        older.execute("SELECT pg_current_xact_id()")  # takes its txid, sleeps
        assert conn.execute("SELECT * FROM validate_entry(7, 1)").fetchone() == (
            False, "Card has insufficient balance: 0.00")     # alert at position p, committed
        assert older.execute("SELECT * FROM recharge_card(7, 2000, 1)").fetchone() == (
            True, "Recharged: 20.00, Balance: 20.00")         # alert at p + 1
        older.commit()
    [(p, _, first), (p1, _, second)] = conn.execute(ALERTS).fetchall()
    assert (p1, first, second) == (p + 1, "Insufficient Balance",
                                   "Recharged: 20.00, Balance: 20.00")
    # The older transaction's row comes first in (txid, position) order, where the cursor
    # moves; with one row per batch, the row it must follow is sent ahead of it.
    rows = conn.execute("SELECT row_position, ahead FROM metro.bridge_batch("
                        "'card_alert_export', '0', 0, 1)").fetchall()
    assert rows == [(p, True), (p + 1, False)]
    txid = conn.execute("SELECT txid::text FROM metro.card_alert_export WHERE position = %s",
                        (p + 1,)).fetchone()[0]
    assert conn.execute("SELECT row_position, ahead FROM metro.bridge_batch("
                        "'card_alert_export', %s, %s, 1)", (txid, p + 1)).fetchall() == [
        (p, False)]


def first_occurrences(records) -> dict[bytes, list[int]]:
    """Per key, the positions in the order they first arrived (duplicates dropped)."""
    seen: set[int] = set()
    per_key: dict[bytes, list[int]] = {}
    for record in records:
        position = int(dict(record.headers)["position"])
        if position not in seen:
            seen.add(position)
            per_key.setdefault(record.key, []).append(position)
    return per_key


def test_interleaved_writers_never_invert_a_key(db, conn, stations, start_bridge, topic_reader):
    cards = range(1, 5)
    for card in cards:
        add_card(conn, card, balance=0, notify=2)
    reader = topic_reader("CARD_ALERT_EXPORT")
    bridge = start_bridge(db, "--no-inbound", "--batch-size", "2")
    bridge.wait_for_output("holding the lease")

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        with psycopg.connect(db) as session:
            for _ in range(25):
                session.execute("SELECT pg_current_xact_id()")  # the txid first
                time.sleep(rng.random() * 0.01)
                session.execute("SELECT recharge_card(%s, 100, 1)", (rng.choice(cards),))
                time.sleep(rng.random() * 0.005)
                session.commit()

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    written = conn.execute(ALERTS).fetchall()
    assert len(written) == 200
    wait_until(lambda: len({int(dict(r.headers)["position"]) for r in reader.read_idle(0.5)})
               == 200, 60, "every alert delivered")
    per_key = first_occurrences(reader.records)
    assert sum(map(len, per_key.values())) == 200
    inversions = {key: positions for key, positions in per_key.items()
                  if positions != sorted(positions)}
    assert inversions == {}
    # The commit order of one card is its position order: its balance grew in that order.
    for card in cards:
        messages = [m for _, c, m in written if c == card]
        balances = [int(m.split("Balance: ")[1].replace(".", "")) for m in messages]
        assert balances == sorted(balances)
    assert bridge.terminate() == 0


def test_a_row_is_sent_only_once_its_commit_is_durable(db, conn, server_dsn, tmp_path):
    # Writers with synchronous_commit = off (every session of the database here, the
    # bridge's own too) commit before their WAL is flushed; the WAL writer, slowed to 3 s,
    # flushes it later. A crash in between would take back a row Kafka already had: the
    # bridge sends it only once the WAL holding it is flushed.
    path = tmp_path / "streams.jsonl"
    database = sql.Identifier(psycopg.conninfo.conninfo_to_dict(db)["dbname"])
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute("ALTER SYSTEM SET wal_writer_delay = '3s'")
        admin.execute("SELECT pg_reload_conf()")
        admin.execute(sql.SQL("ALTER DATABASE {} SET synchronous_commit = off").format(database))
        bridge = FileBridge(db, path)
        try:
            wait_until(lambda: any(m.startswith("holding the lease") for m in bridge.messages),
                       15, "the bridge up")
            with psycopg.connect(db, autocommit=True) as writer:
                writer.execute("INSERT INTO metro.fraud (trans_id, card_id, ts, station_id,"
                               " activity_code, amount) VALUES ('async_1', 1, now(), 1, 1, 250)")
                committed = writer.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]
            # Sampled every 2 ms until the row is there: whether it was sent, then whether
            # its commit is durable (read after: a flush only moves on).
            sent = flushed = False
            deadline = time.monotonic() + 15
            while not sent and time.monotonic() < deadline:
                sent = any(line["key"] == "async_1" for line in lines(path))
                flushed = conn.execute("SELECT pg_current_wal_flush_lsn() >= %s::pg_lsn",
                                       (committed,)).fetchone()[0]
                time.sleep(0.002)
        finally:
            bridge.close()
            admin.execute(sql.SQL("ALTER DATABASE {} RESET synchronous_commit").format(database))
            admin.execute("ALTER SYSTEM RESET wal_writer_delay")
            admin.execute("SELECT pg_reload_conf()")
    # Sent, and not before its commit could no longer be lost.
    assert (sent, flushed) == (True, True)

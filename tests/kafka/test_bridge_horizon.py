"""Rows that commit out of position order are never skipped: the bridge reads only below the
oldest running transaction (pg_snapshot_xmin), proven with explicit interleavings and with
16 concurrent writers while a bridge runs."""

from __future__ import annotations

import random
import threading

import psycopg
from kafka import KafkaConsumer
from kafka_fixtures import wait_until

INSERT_TRIP = ("INSERT INTO metro.trips (card_id, entry_station, entry_ts, exit_station, exit_ts)"
               " VALUES (%s, 1, now(), 2, now())")


def batch(conn: psycopg.Connection, after: tuple[str, int] = ("0", 0)) -> list[int]:
    rows = conn.execute("SELECT row_position FROM metro.bridge_batch('trips', %s, %s, 1000)",
                        after).fetchall()
    return [position for (position,) in rows]


def test_a_lower_position_committing_late_holds_back_later_rows(db, conn):
    early = psycopg.connect(db)
    early.execute(INSERT_TRIP, (1,))                     # position 1, still open
    conn.execute(INSERT_TRIP, (2,))                      # position 2, committed
    # A reader by position alone would deliver 2 and move past 1 for ever.
    assert batch(conn) == []
    early.commit()
    early.close()
    assert batch(conn) == [1, 2]


def test_a_transaction_that_started_first_but_writes_last_is_read_in_txid_order(db, conn):
    """The cursor moves in (txid, position) order; a batch comes in position order."""
    first = psycopg.connect(db)
    first.execute("SELECT pg_current_xact_id()")         # takes the older txid, writes nothing yet
    conn.execute(INSERT_TRIP, (1,))                      # position 1, newer txid, committed
    assert batch(conn) == []
    first.execute(INSERT_TRIP, (2,))                     # position 2, older txid
    first.commit()
    first.close()
    assert batch(conn) == [1, 2]
    # The cursor after position 2 (older txid) still finds position 1.
    txid = conn.execute("SELECT txid::text FROM metro.trips WHERE position = 2").fetchone()[0]
    assert batch(conn, (txid, 2)) == [1]


def test_an_aborted_transaction_leaves_no_gap_behind(db, conn):
    aborted = psycopg.connect(db)
    aborted.execute(INSERT_TRIP, (1,))
    conn.execute(INSERT_TRIP, (2,))
    aborted.rollback()
    aborted.close()
    assert batch(conn) == [2]


WRITERS = 16
ROWS = 50_000
ROWS_PER_TRANSACTION = 25


def write_with_random_commit_delays(dsn: str, writer: int, errors: list[BaseException]) -> None:
    """Insert this writer's share of ROWS, sleeping at random between insert and commit."""
    rng = random.Random(writer)
    try:
        with psycopg.connect(dsn) as conn:
            for _ in range(ROWS // WRITERS // ROWS_PER_TRANSACTION):
                conn.execute("INSERT INTO metro.trips (card_id, entry_station, entry_ts,"
                             " exit_station, exit_ts) SELECT %s, 1, now(), 2, now()"
                             " FROM generate_series(1, %s)", (writer, ROWS_PER_TRANSACTION))
                threading.Event().wait(rng.choice((0, 0, 0.001, 0.005, 0.02)))
                conn.commit()
    except BaseException as error:  # reported by the test thread
        errors.append(error)


def test_sixteen_writers_committing_out_of_order_lose_nothing(db, conn, start_bridge,
                                                              topic_reader):
    reader = topic_reader("TRIPS")
    bridge = start_bridge(db, "--no-inbound", "--batch-size", "2000")
    bridge.wait_for_output("holding the lease")
    errors: list[BaseException] = []
    writers = [threading.Thread(target=write_with_random_commit_delays, args=(db, n, errors))
               for n in range(WRITERS)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(120)
    assert errors == [] and not any(w.is_alive() for w in writers)

    records = reader.read(ROWS, timeout=120)
    positions = [int(dict(r.headers)["position"]) for r in records]
    assert sorted(positions) == list(range(1, ROWS + 1))
    # The commits really did interleave: Kafka order (txid, position) is not position order.
    assert positions != sorted(positions)
    wait_until(lambda: conn.execute("SELECT pending FROM metro.bridge_lag()"
                                    " WHERE stream = 'trips'").fetchone() == (0,),
               30, "the trips cursor to reach the end")
    assert bridge.terminate() == 0
    # Nothing was sent twice: the topic grew by exactly ROWS records (no waiting for quiet).
    probe = KafkaConsumer(bootstrap_servers=reader.bootstrap, group_id=None)
    try:
        ends = probe.end_offsets(reader.partitions)
    finally:
        probe.close()
    assert sum(ends[tp] - reader.start[tp] for tp in reader.partitions) == ROWS

"""Nothing is lost when the bridge is killed, Kafka goes away, PostgreSQL restarts or a second
bridge starts: duplicates, if any, carry the same position header and the same value."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import psycopg
from kafka import KafkaConsumer
from kafka_fixtures import TopicReader, wait_until

from metro import schema
from metro.embedded import EmbeddedServer

INSERT_FRAUD = ("INSERT INTO metro.fraud (trans_id, card_id, ts, station_id, activity_code, amount)"
                " SELECT n || '_' || %s, n, now(), 1, 1, 250 FROM generate_series(1, %s) n")


def pending(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT sum(pending) FROM metro.bridge_lag()").fetchone()
    assert row is not None
    return int(row[0])


def delivered(dsn: str, stream: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT delivered FROM metro.bridge_cursors WHERE stream = %s",
                           (stream,)).fetchone()
    assert row is not None
    return int(row[0])


def everything(reader: TopicReader) -> list:
    """Every record that arrived on the reader's topic since it was created (duplicates
    included), read up to the topic's end offsets: call it once nothing is sending."""
    probe = KafkaConsumer(bootstrap_servers=reader.bootstrap, group_id=None)
    try:
        ends = probe.end_offsets(reader.partitions)
    finally:
        probe.close()
    return reader.read(sum(ends[tp] - reader.start[tp] for tp in reader.partitions))


def by_position(records: list) -> dict[int, set[bytes]]:
    """Each position seen, with the distinct values it arrived with."""
    seen: dict[int, set[bytes]] = {}
    for record in records:
        seen.setdefault(int(dict(record.headers)["position"]), set()).add(record.value)
    return seen


def test_killed_in_the_middle_of_a_backlog_resumes_from_its_cursor(db, conn, start_bridge,
                                                                   topic_reader):
    reader = topic_reader("FRAUD")
    conn.execute(INSERT_FRAUD, ("kill", 30_000))
    first = start_bridge(db, "--no-inbound", "--batch-size", "200")
    wait_until(lambda: delivered(db, "fraud") >= 3000, 60, "3,000 rows delivered")
    first.kill()
    at_kill = delivered(db, "fraud")
    assert 3000 <= at_kill < 30_000

    second = start_bridge(db, "--no-inbound")
    wait_until(lambda: pending(db) == 0, 60, "the backlog to drain")
    assert second.terminate() == 0
    records = everything(reader)
    seen = by_position(records)
    assert sorted(seen) == list(range(1, 30_001))
    assert all(len(values) == 1 for values in seen.values())
    # At most the one batch in flight at the kill was sent twice.
    assert len(records) - 30_000 <= 200
    assert delivered(db, "fraud") == 30_000


def test_kafka_stopped_under_load_and_started_again(db, conn, kafka_broker, kafka, start_bridge,
                                                    topic_reader):
    reader = topic_reader("FRAUD")
    bridge = start_bridge(db, "--no-inbound")
    bridge.wait_for_output("holding the lease")
    stop_writing = threading.Event()

    def write() -> None:
        with psycopg.connect(db, autocommit=True) as writer:
            for n in range(3000):  # bounded: about 40 s at most
                if stop_writing.wait(0.01):
                    return
                writer.execute(INSERT_FRAUD, (f"w{n}", 5))

    def written() -> int:
        return conn.execute("SELECT count(*) FROM metro.fraud").fetchone()[0]

    writer = threading.Thread(target=write)
    writer.start()
    try:
        wait_until(lambda: delivered(db, "fraud") >= 100, 30, "rows delivered before the outage")
        kafka_broker.stop()
        bridge.wait_for_output(f"Kafka at {kafka}: no acknowledgement for 3 s;")
        at_outage = written()
        wait_until(lambda: written() >= at_outage + 100, 30, "rows written during the outage")
        kafka_broker.start()
        after_outage = delivered(db, "fraud")
        wait_until(lambda: delivered(db, "fraud") > after_outage and written() > at_outage + 200,
                   60, "rows delivered while writes go on after the outage")
    finally:
        stop_writing.set()
        writer.join(30)
    total = conn.execute("SELECT count(*) FROM metro.fraud").fetchone()[0]
    assert total > 500
    wait_until(lambda: pending(db) == 0, 60, "the bridge to catch up after the outage")
    assert bridge.process.poll() is None, bridge.output()
    assert f"Kafka at {kafka}: no acknowledgement for 3 s;" in bridge.output()
    assert bridge.terminate() == 0
    records = everything(reader)
    seen = by_position(records)
    assert sorted(seen) == list(range(1, total + 1))
    assert all(len(values) == 1 for values in seen.values())


def test_postgres_restart_reconnects_and_catches_up(tmp_path: Path, start_bridge, topic_reader):
    server = EmbeddedServer(tmp_path / "home")
    server.start()
    try:
        dsn = server.conninfo()
        schema.install(dsn)
        reader = topic_reader("TRIPS")
        bridge = start_bridge(dsn, "--no-inbound")
        bridge.wait_for_output("holding the lease")
        insert = ("INSERT INTO metro.trips (card_id, entry_station, entry_ts, exit_station,"
                  " exit_ts) SELECT n, 1, now(), 2, now() FROM generate_series(1, 100) n")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(insert)
        assert len(reader.read(100)) == 100

        server.stop()
        bridge.wait_for_output("PostgreSQL unavailable")
        server.start()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(insert)
        wait_until(lambda: pending(dsn) == 0, 60, "the bridge to catch up after the restart")
        assert bridge.output().count("holding the lease as") == 2
        assert bridge.terminate() == 0
        seen = by_position(everything(reader))
        assert sorted(seen) == list(range(1, 201))
    finally:
        server.stop()


def test_a_second_bridge_waits_for_the_lease_and_takes_over(db, conn, start_bridge,
                                                             topic_reader):
    reader = topic_reader("FRAUD")
    first = start_bridge(db, "--no-inbound")
    first.wait_for_output("holding the lease")
    second = start_bridge(db, "--no-inbound")
    second.wait_for_output(f"waiting for the lease held by {socket.gethostname()}:"
                           f"{first.process.pid}")
    conn.execute(INSERT_FRAUD, ("a", 50))
    wait_until(lambda: delivered(db, "fraud") == 50, 30, "the first bridge to deliver 50 rows")
    assert "holding the lease" not in second.output()

    first.kill()
    second.wait_for_output("holding the lease")
    conn.execute(INSERT_FRAUD, ("b", 50))
    wait_until(lambda: delivered(db, "fraud") == 100, 30, "the second bridge to deliver 50 rows")
    assert second.terminate() == 0
    records = everything(reader)
    # The first bridge had recorded Kafka's acks for all it sent: each row arrived once.
    assert sorted(int(dict(r.headers)["position"]) for r in records) == list(range(1, 101))


def test_a_topic_kafka_refuses_holds_back_its_stream_alone(db, conn, start_bridge, topic_reader):
    # An invalid topic name, as an operator's typo in register_stream() would give; a topic
    # missing where the broker creates none, or one the bridge may not write, acts alike.
    reader = topic_reader("FRAUD")
    conn.execute("UPDATE metro.streams SET topic = 'TRIPS?' WHERE stream = 'trips'")
    conn.execute("INSERT INTO metro.trips (card_id, entry_station, entry_ts, exit_station,"
                 " exit_ts) SELECT n, 1, now(), 2, now() FROM generate_series(1, 3) n")
    conn.execute(INSERT_FRAUD, ("a", 50))
    bridge = start_bridge(db, "--no-inbound")
    wait_until(lambda: delivered(db, "fraud") == 50, 30, "fraud delivered beside trips")
    conn.execute(INSERT_FRAUD, ("b", 50))
    wait_until(lambda: delivered(db, "fraud") == 100, 30, "fraud written later delivered too")
    wait_until(lambda: bridge.output().count("cannot send trips to Kafka") >= 2, 30,
               "trips tried twice")
    assert bridge.terminate() == 0
    refusal = next(line for line in bridge.output().splitlines()
                   if "cannot send trips to Kafka" in line)
    assert refusal.split("WARNING metro.bridge: ")[1].startswith(
        "cannot send trips to Kafka (topic TRIPS?: ")
    assert refusal.endswith("; trying it again in 0.5 s, the other streams go on")
    # Each fraud row once: the trips failures never sent the other streams' batches again.
    assert sorted(int(dict(r.headers)["position"]) for r in everything(reader)) == list(
        range(1, 101))
    assert delivered(db, "trips") == 0


def test_sessions_that_fail_to_begin_leave_no_inbound_consumer_behind(db, conn, start_bridge):
    def inbound_sessions() -> int:
        return conn.execute("SELECT count(*) FROM pg_stat_activity"
                            " WHERE application_name = 'metro bridge inbound'").fetchone()[0]

    with psycopg.connect(db) as locker:
        # The stream registry locked (an upgrade running): each session fails to begin.
        locker.execute("LOCK TABLE metro.streams IN ACCESS EXCLUSIVE MODE")
        bridge = start_bridge(db)
        seen = []
        wait_until(lambda: seen.append(inbound_sessions())
                   or bridge.output().count("lock timeout") >= 3, 60, "three sessions refused")
        seen.append(inbound_sessions())
        assert max(seen) <= 1, seen
    bridge.wait_for_output("holding the lease")
    wait_until(lambda: inbound_sessions() == 1, 30, "the inbound consumer of the session")
    assert bridge.terminate() == 0
    assert inbound_sessions() == 0

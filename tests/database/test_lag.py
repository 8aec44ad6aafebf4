"""worker_lag() and bridge_lag() count every pending row; with a count limit they count at
most limit + 1 (the first in the reader's order), so a caller that asks every second pays
the same whatever the backlog; a limit that is not a positive number is refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from metro.backlog import STATUS_COUNT_LIMIT
from metro.bridge import status as bridge_status
from metro.worker import status as worker_status

START = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)

# Five card events, fraud rows and payment decisions, one second apart, in time order.
INSERT_EVENTS = ("INSERT INTO card_events (card_id, ts, station_id, activity_code, amount, accept)"
                 " SELECT n, %s + n * interval '1 s', 1, 1, 250, 1 FROM generate_series(0, %s) n")
INSERT_FRAUD = ("INSERT INTO fraud (trans_id, card_id, ts, station_id, activity_code, amount)"
                " SELECT n || '_1', n, %s + n * interval '1 s', 1, 1, 250"
                " FROM generate_series(0, 4) n")
INSERT_DECISIONS = ("INSERT INTO transaction_decisions (transaction_id, account_id, amount, ts,"
                    " risk_level, blocked, rule, message)"
                    " SELECT 'tx' || n, 'account1', 100, %s + n * interval '1 s', 1, false,"
                    " 'default_pass', 'Approved' FROM generate_series(0, 4) n")


def lag(conn: psycopg.Connection, query: str, limit: int | None) -> tuple[object, ...]:
    row = conn.execute(query, (limit,)).fetchone()
    assert row is not None
    return tuple(row)


@pytest.mark.parametrize(("limit", "expected"), [
    (None, (5, START)),      # every pending row
    (5, (5, START)),         # exactly the limit: no more than it
    (4, (5, START)),         # limit + 1 counted: more than 4
    (1, (2, START)),
    (2**63 - 1, (5, START)),  # the largest bigint: every row, no overflow of limit + 1
])
def test_a_count_limit_counts_at_most_one_row_more(conn, stations, limit, expected):
    conn.execute(INSERT_EVENTS, (START, 4))
    conn.execute(INSERT_FRAUD, (START,))
    conn.execute(INSERT_DECISIONS, (START,))
    assert lag(conn, "SELECT pending, oldest_pending FROM worker_lag(%s)"
                     " WHERE source = 'card_events'", limit) == expected
    # A stream's rows, counted by the rollup into payment_totals.
    assert lag(conn, "SELECT pending, oldest_pending FROM worker_lag(%s)"
                     " WHERE source = 'transaction_decisions'", limit) == expected
    assert lag(conn, "SELECT pending, oldest_pending FROM bridge_lag(%s)"
                     " WHERE stream = 'fraud'", limit) == expected


def test_without_a_limit_every_pending_row_is_counted(conn, stations):
    conn.execute(INSERT_EVENTS, (START, 4))
    conn.execute(INSERT_DECISIONS, (START + timedelta(minutes=1),))
    assert conn.execute("SELECT source, pending, oldest_pending FROM worker_lag()"
                        " ORDER BY source").fetchall() == [
        ("card_alert_export", 0, None), ("card_events", 5, START), ("train_events", 0, None),
        ("transaction_decisions", 5, START + timedelta(minutes=1))]


def test_a_limited_count_reads_only_the_rows_it_counts(db, stations):
    # 20,000 pending events: the limited count reads 101 of them, the full count all.
    with psycopg.connect(db) as conn:
        conn.execute(INSERT_EVENTS, (START, 19_999))
        conn.commit()

        def rows_read(query: str) -> tuple[object, ...]:
            read = ("SELECT sum(seq_tup_read + coalesce(idx_tup_fetch, 0))::bigint"
                    " FROM pg_stat_xact_user_tables WHERE relid IN (SELECT inhrelid"
                    " FROM pg_inherits WHERE inhparent = 'metro.card_events'::regclass)")
            before = conn.execute(read).fetchone()
            pending = conn.execute(query).fetchone()
            after = conn.execute(read).fetchone()
            assert before is not None and pending is not None and after is not None
            return pending[0], after[0] - before[0]

        assert rows_read("SELECT pending FROM worker_lag(100) WHERE source = 'card_events'"
                         ) == (101, 101)
        assert rows_read("SELECT pending FROM worker_lag() WHERE source = 'card_events'"
                         ) == (20_000, 20_000)


def test_the_count_starts_after_the_cursor(conn, stations):
    conn.execute(INSERT_EVENTS, (START, 4))
    conn.execute("SELECT * FROM run_rollup(3)")
    assert lag(conn, "SELECT pending, oldest_pending FROM worker_lag(%s)"
                     " WHERE source = 'card_events'", 1) == (2, START + timedelta(seconds=3))


@pytest.mark.parametrize("function", ["worker_lag", "bridge_lag"])
@pytest.mark.parametrize("limit", [0, -1])
def test_a_limit_that_is_not_a_positive_number_is_refused(conn, function, limit):
    with pytest.raises(psycopg.Error) as raised:
        conn.execute(f"SELECT * FROM {function}(%s)", (limit,))
    assert raised.value.sqlstate == "22023"
    assert raised.value.diag.message_primary == (
        f"{function}: count_limit must be a positive number of rows or NULL (count them all),"
        f" got {limit}")
    assert raised.value.diag.message_hint == (
        f"SELECT * FROM {function}(100000) counts at most 100,001 pending rows per"
        f" {'source' if function == 'worker_lag' else 'stream'}.")


def test_the_status_commands_count_up_to_their_limit(conn, stations):
    conn.execute(INSERT_EVENTS, (START, 4))
    conn.execute(INSERT_FRAUD, (START,))
    assert STATUS_COUNT_LIMIT == 1_000_000
    worker = worker_status.render(worker_status.collect(conn, count_limit=3))
    rows = {line.split()[0]: line.split() for line in worker.splitlines()[4:]}
    assert rows["card_events"][1:4] == ["0", "-", "3+"]
    assert rows["train_events"][1:] == ["0", "-", "0", "-"]
    bridge = bridge_status.render(bridge_status.collect(conn, count_limit=3))
    fraud = next(line.split() for line in bridge.splitlines() if line.startswith("fraud "))
    assert fraud[:5] == ["fraud", "FRAUD", "0", "3+", "2026-11-02"]
    # Within the limit, the exact count.
    worker = worker_status.render(worker_status.collect(conn, count_limit=5))
    assert {line.split()[0]: line.split() for line in worker.splitlines()[4:]}[
        "card_events"][3] == "5"

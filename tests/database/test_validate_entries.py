"""validate_entries: a batch gets exactly the results of validate_entry called alone, in
input order, and concurrent batches over the same cards never deadlock."""

import random
import threading
import time
from datetime import timedelta

import psycopg
import pytest
from factories import add_card, at, catch_up, counts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

CARDS = [
    # card_id, balance, card_type, enabled, expires minutes after T0, notify
    (1, 900, 0, True, None, 1),
    (2, 260, 0, True, None, 2),
    (3, 0, 1, True, -5, 0),       # unlimited, expired
    (4, 0, 1, True, 600, 0),      # unlimited, valid
    (5, 5000, 0, False, None, 1),  # disabled
]  # card 6 does not exist

# Every query orders by all its columns: a batch may write rows in another order.
STATE = [
    "SELECT card_id, balance FROM cards ORDER BY 1, 2",
    "SELECT card_id, ts, station_id, activity_code, amount, accept FROM card_events"
    " ORDER BY 1, 2, 3, 4, 5, 6",
    "SELECT trans_id, card_id, ts, station_id, activity_code, amount FROM fraud"
    " ORDER BY 1, 2, 3, 4, 5, 6",
    "SELECT card_id, ts, station_name, notify, alert_message FROM card_alert_export"
    " ORDER BY 1, 2, 3, 4, 5",
    "SELECT * FROM card_history_second ORDER BY 1, 2, 3",
    "SELECT * FROM station_second_stats ORDER BY 1, 2",
]


def reset(conn):
    conn.execute("TRUNCATE card_events, fraud, card_alert_export, cards")
    for card_id, balance, card_type, enabled, expires, notify in CARDS:
        add_card(conn, card_id, balance=balance, card_type=card_type, enabled=enabled,
                 expires=None if expires is None else at(minutes=expires), notify=notify)


def state(conn):
    catch_up(conn)
    return [conn.execute(query).fetchall() for query in STATE]


# Seconds after T0: within a second of each other, and across more than an hour, with
# pairs exactly one window apart (the window [ts - 1 hour, ts) includes its start).
OFFSETS = [0, 0.3, 0.9, 1.2, 60, 600, 1800, 1800.5, 3000, 3599, 3599.9, 3600, 3600.3, 3601,
           4200, 5400, 7200, 7200.2]
swipe = st.tuples(st.integers(1, 6), st.integers(1, 15),
                  st.one_of(st.sampled_from(OFFSETS), st.integers(0, 75_000).map(lambda n: n / 10)))
# The rules' thresholds, drawn: the settings row applies to the next call.
rule_settings = st.tuples(st.sampled_from(["1 hour", "30 minutes", "90 minutes", "1 second"]),
                          st.integers(1, 6), st.integers(1, 12))


def test_batch_equals_single_calls(conn, stations):
    @settings(max_examples=60, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(swipe, min_size=1, max_size=25), rule_settings)
    def check(swipes, thresholds):
        cards = [c for c, _, _ in swipes]
        stations_ = [s for _, s, _ in swipes]
        times = [at(seconds) for _, _, seconds in swipes]
        conn.execute("UPDATE settings SET fraud_window = %s, fraud_station_limit = %s,"
                     " fraud_entry_limit = %s", thresholds)

        reset(conn)
        alone = [tuple(conn.execute("SELECT * FROM validate_entry(%s, %s, %s)",
                                    (c, s, t)).fetchone())
                 for c, s, t in zip(cards, stations_, times, strict=True)]
        after_alone = state(conn)

        reset(conn)
        batch = conn.execute("SELECT * FROM validate_entries(%s, %s, %s)",
                             (cards, stations_, times)).fetchall()
        assert [r[0] for r in batch] == list(range(1, len(swipes) + 1))
        assert [tuple(r[1:]) for r in batch] == alone
        assert state(conn) == after_alone

    try:
        check()
    finally:
        conn.execute("UPDATE settings SET fraud_window = '1 hour', fraud_station_limit = 5,"
                     " fraud_entry_limit = 10")


def test_messages_of_a_batch(conn, stations):
    reset(conn)
    rows = conn.execute(
        "SELECT * FROM validate_entries(%s, %s, %s)",
        ([1, 6, 1, 5, 3, 4, 2], [4, 4, 9, 4, 4, 4, 1],
         [at(0), at(0), at(0.5), at(1), at(1), at(1), at(2)])).fetchall()
    assert rows == [
        (1, True, "Remaining Balance: 6.25"),
        (2, False, "Card Invalid"),
        (3, False, "Fraudulent transaction"),
        (4, False, "Card Disabled"),
        (5, False, "Card Expired"),
        (6, True, "Card Expires: 2026-11-02 18:00:00+00"),
        (7, True, "Remaining Balance: 0.10"),
    ]


def test_empty_batch(conn, stations):
    assert conn.execute("SELECT * FROM validate_entries('{}', '{}')").fetchall() == []


LENGTHS = "validate_entries: card_ids, station_ids and ts must have the same length"


@pytest.mark.parametrize(("args", "sqlstate", "message"), [
    (([1, 2], [1], None), "22023", f"{LENGTHS}, got 2, 1 and <NULL>"),
    (([1, 2], [1, 2], [at()]), "22023", f"{LENGTHS}, got 2, 2 and 1"),
    (([1, None], [1, 2], None), "MT004",
     "validate_entries: card_ids[2] or station_ids[2] must not be NULL"),
    ((None, [1], None), "MT004", "validate_entries: card_ids must not be NULL"),
    (([1, 2], [1, 99], None), "MT001", "Unknown station: 99"),
])
def test_bad_batches_write_nothing(conn, stations, args, sqlstate, message):
    reset(conn)
    before = counts(conn)
    with pytest.raises(psycopg.Error) as raised:
        conn.execute(
            "SELECT * FROM validate_entries(%s::bigint[], %s::integer[], %s::timestamptz[])", args)
    assert (raised.value.sqlstate, raised.value.diag.message_primary) == (sqlstate, message)
    assert counts(conn) == before


def test_concurrent_batches_do_not_deadlock(db, conn, stations):
    cards = list(range(1, 41))
    for card in cards:
        add_card(conn, card, balance=100_000)
    conn.execute("UPDATE settings SET fraud_entry_limit = 100000, fraud_station_limit = 100000")
    failures: list[BaseException] = []
    charged: list[int] = []

    def client(seed):
        rng = random.Random(seed)
        try:
            with psycopg.connect(db, autocommit=True) as mine:
                for batch in range(30):
                    chosen = rng.sample(cards, 20) + rng.sample(cards, 5)
                    base = at(minutes=seed * 100 + batch)
                    times = [base + timedelta(seconds=i * 2) for i in range(len(chosen))]
                    rows = mine.execute("SELECT * FROM validate_entries(%s, %s, %s)",
                                        (chosen, [1] * len(chosen), times)).fetchall()
                    charged.append(sum(1 for _, ok, _ in rows if ok))
        except BaseException as error:  # reported in the test's thread
            failures.append(error)

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures
    spent = conn.execute("SELECT sum(100000 - balance) FROM cards").fetchone()[0]
    assert spent == sum(charged) * 250
    assert conn.execute("SELECT count(*) FROM card_events").fetchone() == (4 * 30 * 25,)


def test_batches_with_an_unknown_card_twice_in_opposite_orders_do_not_deadlock(db, conn,
                                                                               stations):
    """Each batch holds unknown card 99 at two seconds, the two batches in opposite orders,
    both inside open transactions: neither waits on the other."""
    first, second = at(), at(1)
    barrier = threading.Barrier(2)
    failures: list[BaseException] = []
    results: list[list[tuple[int, bool, str]]] = []

    def client(times):
        try:
            with psycopg.connect(db) as mine:
                mine.execute("SET lock_timeout = '10s'")
                rows = mine.execute("SELECT * FROM validate_entries(%s, %s, %s)",
                                    ([99, 99], [1, 2], times)).fetchall()
                barrier.wait(timeout=20)  # both batches written, neither committed
                mine.commit()
                results.append([tuple(r) for r in rows])
        except BaseException as error:  # reported in the test's thread
            failures.append(error)

    threads = [threading.Thread(target=client, args=(times,))
               for times in ([first, second], [second, first])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures
    assert results == [[(1, False, "Card Invalid"), (2, False, "Card Invalid")]] * 2
    catch_up(conn)
    assert conn.execute("SELECT second_start, swipes FROM card_history_second"
                        " WHERE card_id = 99 ORDER BY 1").fetchall() == [(first, 2), (second, 2)]


def test_one_card_repeated_20000_times_takes_linear_time(conn, stations):
    """A batch of one card 20,000 times: 20,000 rounds, each reading only its own swipe (it
    took quadratic time: 14.7 s for 4,000)."""
    add_card(conn, 1, balance=10_000_000)
    # A window of five swipes: every swipe passes, and the rules read five entries, not
    # the 1,800 of an hour (what this measures is the batch, not the rules).
    conn.execute("UPDATE settings SET fraud_window = '10 seconds'")
    n = 20_000
    times = [at(seconds=2 * i) for i in range(n)]
    started = time.monotonic()
    rows = conn.execute("SELECT * FROM validate_entries(%s, %s, %s)",
                        ([1] * n, [1] * n, times)).fetchall()
    elapsed = time.monotonic() - started
    assert [r[0] for r in rows] == list(range(1, n + 1))
    assert all(r[1] for r in rows)
    assert rows[-1][2] == f"Remaining Balance: {(10_000_000 - 250 * n) // 100}.00"
    assert conn.execute("SELECT count(*) FROM card_events").fetchone() == (n,)
    assert elapsed < 120, elapsed

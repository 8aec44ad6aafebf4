"""Eight connections swipe and recharge the same cards at once: balances stay exact."""

import itertools
import random
import threading
from datetime import timedelta

import psycopg
from factories import add_card, at

CARDS = (1, 2, 3)
INITIAL = 1_000
RECHARGE = 300
FARE = 250  # station 1, Harbor Gate
CLIENTS = 8
OPERATIONS = 150


def test_concurrent_swipes_and_recharges_keep_balances_exact(db, conn, stations):
    for card in CARDS:
        add_card(conn, card, balance=INITIAL)
    # Only the balance decides here: relax the hourly rules, and give every call
    # its own second so the same-second rule never fires.
    conn.execute("UPDATE settings SET fraud_entry_limit = 100000, fraud_station_limit = 100000")
    clock = itertools.count()
    clock_lock = threading.Lock()
    start = threading.Barrier(CLIENTS)
    tallies: list[dict[tuple[int, str], int]] = []
    failures: list[BaseException] = []

    def client(seed: int) -> None:
        rng = random.Random(seed)
        tally: dict[tuple[int, str], int] = {}
        try:
            with psycopg.connect(db, autocommit=True) as mine:
                start.wait()
                for _ in range(OPERATIONS):
                    card = rng.choice(CARDS)
                    with clock_lock:
                        ts = at() + timedelta(seconds=next(clock))
                    if rng.random() < 0.25:
                        row = mine.execute("SELECT * FROM recharge_card(%s, %s, 1, %s)",
                                           (card, RECHARGE, ts)).fetchone()
                        kind = "recharged"
                    else:
                        row = mine.execute("SELECT * FROM validate_entry(%s, 1, %s)",
                                           (card, ts)).fetchone()
                        kind = "charged" if row[0] else "refused"
                    tally[(card, kind)] = tally.get((card, kind), 0) + 1
        except BaseException as error:  # reported below, in the test's thread
            failures.append(error)
        tallies.append(tally)

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures
    assert len(tallies) == CLIENTS

    total: dict[tuple[int, str], int] = {}
    for tally in tallies:
        for key, value in tally.items():
            total[key] = total.get(key, 0) + value
    assert sum(total.values()) == CLIENTS * OPERATIONS
    for card in CARDS:
        charged = total.get((card, "charged"), 0)
        recharged = total.get((card, "recharged"), 0)
        expected = INITIAL + recharged * RECHARGE - charged * FARE
        row = conn.execute("SELECT balance FROM cards WHERE card_id = %s", (card,)).fetchone()
        assert row == (expected,)
        assert expected >= 0
        recorded = conn.execute(
            "SELECT count(*) FILTER (WHERE activity_code = 1 AND accept = 1),"
            "       count(*) FILTER (WHERE activity_code = 2 AND accept = 1),"
            "       count(*) FILTER (WHERE activity_code = 1 AND accept = 0)"
            " FROM card_events WHERE card_id = %s", (card,)).fetchone()
        assert recorded == (charged, recharged, total.get((card, "refused"), 0))
    # Refusals really happened: the cards ran dry under contention.
    assert sum(v for (_, kind), v in total.items() if kind == "refused") > 0

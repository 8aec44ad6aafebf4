"""The commit-horizon line of the status commands names a transaction open for a second or
more, and leaves out the services' own rounds, which open one many times a second."""

from __future__ import annotations

from datetime import datetime, timedelta

from metro import horizon

STARTED = datetime(2026, 12, 2, 5, 22, 40)


def held(seconds: float) -> horizon.Horizon:
    return (1630, "postgres", "metro", "metro worker", "active", STARTED,
            timedelta(seconds=seconds))


def test_a_transaction_under_a_second_old_is_not_named():
    # Seen: `metro worker --status` named the running worker's own rollup round (0.0 s).
    assert horizon.line(held(0.0), "the rollup") == horizon.line(None, "the rollup") == (
        "commit horizon: no transaction open for 1 s or more holds the rollup back")
    assert horizon.line(held(0.99), "delivery") == (
        "commit horizon: no transaction open for 1 s or more holds delivery back")


def test_a_transaction_open_a_second_is_named_with_its_age():
    assert horizon.line(held(1.0), "delivery") == (
        "commit horizon: held by pid 1630 (role postgres, database metro, application"
        " 'metro worker', active), its transaction open for 1.0 s since 2026-12-02 05:22:40:"
        " rows committed after it began wait until it ends")


def test_a_prepared_transaction_is_named_by_its_gid():
    prepared = (None, "metro", "metro", "prepared transaction t1", "prepared", STARTED,
                timedelta(minutes=5))
    assert horizon.line(prepared, "the rollup") == (
        "commit horizon: held by prepared transaction t1 (role metro, database metro,"
        " prepared), its transaction open for 300.0 s since 2026-12-02 05:22:40: rows"
        " committed after it began wait until it ends")

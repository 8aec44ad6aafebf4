"""The demo's waits after its load: the bridge's last rows are waited for while they are
pending, and a further Ctrl-C (skipped()) ends the wait at once."""

from __future__ import annotations

import time

from factories import INSERT_FRAUD

from metro.app.demo import DRAIN_SECONDS, drain


def test_the_drain_waits_while_rows_are_pending_until_skipped(conn):
    conn.execute(INSERT_FRAUD)  # three fraud rows no bridge forwards
    refreshed: list[float] = []
    started = time.monotonic()
    drain(conn, lambda: len(refreshed) == 2, lambda: refreshed.append(time.monotonic()))
    assert len(refreshed) == 2
    assert time.monotonic() - started < DRAIN_SECONDS / 2


def test_the_drain_ends_at_once_when_nothing_is_pending(conn):
    refreshed: list[float] = []
    drain(conn, lambda: False, lambda: refreshed.append(time.monotonic()))
    assert refreshed == []

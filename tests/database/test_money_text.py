"""Amounts in messages are units.cents (cents_text): the same text for every bigint,
whatever the caller's session settings."""

from __future__ import annotations

import pytest

EDGES = [0, 5, -5, 99, -99, 100, 101, 1250, -1250, 2_147_483_647, -2_147_483_648,
         9_223_372_036_854_775_807, -9_223_372_036_854_775_807, -9_223_372_036_854_775_808]


def units_and_cents(cents: int) -> str:
    return f"{'-' if cents < 0 else ''}{abs(cents) // 100}.{abs(cents) % 100:02d}"


@pytest.mark.parametrize("setting", [None, "lc_numeric = 'C'", "extra_float_digits = 3",
                                     "DateStyle = 'German, DMY'"])
def test_cents_text_prints_units_and_two_decimals(conn, setting):
    if setting:
        conn.execute(f"SET {setting}")
    printed = conn.execute("SELECT array_agg(cents_text(v) ORDER BY n)"
                           " FROM unnest(%s::bigint[]) WITH ORDINALITY u(v, n)",
                           (EDGES,)).fetchone()
    assert printed == ([units_and_cents(v) for v in EDGES],)
    assert conn.execute("SELECT cents_text(NULL)").fetchone() == (None,)


def test_cents_text_of_a_range_matches_the_long_hand(conn):
    rows = conn.execute("SELECT v, cents_text(v) FROM generate_series(-30000, 30000, 7) v"
                        ).fetchall()
    assert len(rows) == 8572
    assert [text for _, text in rows] == [units_and_cents(v) for v, _ in rows]

"""Session settings a caller may change at will do not change what a call decides: the
time zone does not stretch the fraud window nor move the expiry a swipe tells, and
standard_conforming_strings does not break the payment decisions."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest
from factories import add_card, call, counts


def test_settings_intervals_are_kept_in_hours_and_seconds(conn):
    conn.execute("UPDATE settings SET fraud_window = '1 day', max_clock_skew = '1 mon',"
                 " max_wait = '2 days 3 hours 5.5 seconds'")
    assert conn.execute("SELECT fraud_window::text, max_clock_skew::text, max_wait::text"
                        " FROM settings").fetchone() == ("24:00:00", "720:00:00", "51:00:05.5")


@pytest.mark.parametrize("zone", ["UTC", "America/New_York"])
def test_the_time_zone_does_not_move_the_fraud_window(conn, stations, zone):
    # Two entries allowed in a window of a day; New York moves its clocks on 2026-03-08 at
    # 07:00 UTC, so in its time a day before 2026-03-09 05:00 UTC is 23 hours.
    conn.execute("UPDATE settings SET fraud_window = '1 day', fraud_entry_limit = 2")
    add_card(conn, 91, balance=5000)
    assert call(conn, "validate_entry", 91, 1, "2026-03-08 05:30:00+00")[0] is True
    assert call(conn, "validate_entry", 91, 2, "2026-03-08 12:00:00+00")[0] is True
    conn.execute(f"SET TimeZone = '{zone}'")
    assert call(conn, "validate_entry", 91, 3, "2026-03-09 05:00:00+00") == (
        False, "Fraudulent transaction")


def test_the_time_zone_does_not_change_the_expiry_message(conn, stations):
    for card in (92, 93):
        add_card(conn, card, card_type=1, expires=datetime(2030, 1, 1, tzinfo=UTC))
    conn.execute("SET TimeZone = 'America/New_York'")
    assert call(conn, "validate_entry", 92, 1) == (True, "Card Expires: 2030-01-01 00:00:00+00")
    assert conn.execute("SELECT accepted, message FROM validate_entries(ARRAY[93::bigint],"
                        " ARRAY[1])").fetchall() == [(True,
                                                      "Card Expires: 2030-01-01 00:00:00+00")]


def test_payments_are_decided_whatever_standard_conforming_strings(conn):
    conn.execute("SET standard_conforming_strings = off")
    before = counts(conn)
    assert conn.execute("SELECT * FROM evaluate_transaction('tx-sc', 'acct-sc', 15.00)"
                        ).fetchone() == (False, "default_pass", "Approved")
    with pytest.raises(psycopg.Error) as error:
        conn.execute("SELECT * FROM evaluate_transaction('tx-sc2', 'acct-sc ', 15.00)")
    assert error.value.sqlstate == "MT014"
    assert counts(conn)["risk_decisions"] == before["risk_decisions"] + 1

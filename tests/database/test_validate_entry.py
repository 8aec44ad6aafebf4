"""validate_entry: every branch, with its message, the balance after, and the rows written."""

from factories import add_card, at, balance, call, catch_up, events, stream

ENTRY, ACCEPTED, REJECTED, FRAUD = 1, 1, 0, -1


def test_unknown_card_is_recorded_as_rejected(conn, stations):
    assert call(conn, "validate_entry", 42, 3, at()) == (False, "Card Invalid")
    assert events(conn) == [(42, at(), 3, ENTRY, 0, REJECTED)]
    assert all(stream(conn, s) == [] for s in ("fraud", "card_alert_export", "trips"))


def test_disabled_card_is_recorded_as_rejected(conn, stations):
    add_card(conn, 7, enabled=False, balance=5000)
    assert call(conn, "validate_entry", 7, 3, at()) == (False, "Card Disabled")
    assert balance(conn, 7) == 5000
    assert events(conn) == [(7, at(), 3, ENTRY, 0, REJECTED)]


def test_pay_per_ride_is_charged_the_station_fare(conn, stations):
    add_card(conn, 42, balance=1250)
    # Lantern Square (4) costs 2.75.
    assert call(conn, "validate_entry", 42, 4, at()) == (True, "Remaining Balance: 9.75")
    assert balance(conn, 42) == 975
    assert events(conn) == [(42, at(), 4, ENTRY, 275, ACCEPTED)]
    assert stream(conn, "card_alert_export") == []


def test_balance_must_be_strictly_greater_than_the_fare(conn, stations):
    add_card(conn, 42, balance=250, notify=0)
    # Old Mill (3) costs 2.50: an equal balance is refused.
    assert call(conn, "validate_entry", 42, 3, at()) == (
        False, "Card has insufficient balance: 2.50")
    assert balance(conn, 42) == 250
    assert events(conn) == [(42, at(), 3, ENTRY, 0, REJECTED)]
    assert stream(conn, "card_alert_export") == []


def test_one_cent_more_than_the_fare_is_enough(conn, stations):
    add_card(conn, 42, balance=251)
    assert call(conn, "validate_entry", 42, 3, at()) == (True, "Remaining Balance: 0.01")
    assert balance(conn, 42) == 1


def test_insufficient_balance_alerts_cards_that_want_alerts(conn, stations):
    add_card(conn, 42, balance=100, notify=2, name="Ada", phone="555-0142", email=None)
    assert call(conn, "validate_entry", 42, 9, at()) == (
        False, "Card has insufficient balance: 1.00")
    assert stream(conn, "card_alert_export") == [
        (42, at(), "Central Exchange", "Ada", "555-0142", None, 2, "Insufficient Balance")]
    catch_up(conn)
    assert conn.execute("SELECT * FROM card_export_stats").fetchall() == [
        (42, "Central Exchange", 1)]


def test_unlimited_card_is_accepted_until_it_expires(conn, stations):
    add_card(conn, 43, card_type=1, balance=0, expires=at(minutes=90))
    assert call(conn, "validate_entry", 43, 9, at()) == (
        True, "Card Expires: 2026-11-02 09:30:00+00")
    assert events(conn) == [(43, at(), 9, ENTRY, 0, ACCEPTED)]
    assert balance(conn, 43) == 0


def test_unlimited_card_is_refused_once_expired(conn, stations):
    add_card(conn, 43, card_type=1, expires=at())
    assert call(conn, "validate_entry", 43, 9, at()) == (False, "Card Expired")
    assert events(conn) == [(43, at(), 9, ENTRY, 0, REJECTED)]


def test_fraud_is_recorded_with_a_fraud_row_and_no_charge(conn, stations):
    add_card(conn, 42, balance=5000)
    assert call(conn, "validate_entry", 42, 1, at(0.2)) == (True, "Remaining Balance: 47.50")
    # Same second, another station: rule 1.
    assert call(conn, "validate_entry", 42, 15, at(0.7)) == (False, "Fraudulent transaction")
    assert balance(conn, 42) == 4750
    assert events(conn) == [(42, at(0.2), 1, ENTRY, 250, ACCEPTED),
                            (42, at(0.7), 15, ENTRY, 0, FRAUD)]
    micros = int(at(0.7).timestamp() * 1_000_000)
    assert stream(conn, "fraud") == [(f"42_{micros}", 42, at(0.7), 15, ENTRY, 350)]


def test_fraud_is_checked_before_the_balance(conn, stations):
    add_card(conn, 42, balance=300)
    assert call(conn, "validate_entry", 42, 1, at(0)) == (True, "Remaining Balance: 0.50")
    assert call(conn, "validate_entry", 42, 1, at(0.5)) == (False, "Fraudulent transaction")
    assert stream(conn, "card_alert_export") == []


def test_fraud_row_key_uses_epoch_microseconds(conn, stations):
    add_card(conn, 9, balance=5000)
    call(conn, "validate_entry", 9, 1, at(0))
    conn.execute("SELECT validate_entry(9, 2, %s)", (at(0.123456),))
    trans_id = conn.execute("SELECT trans_id FROM fraud").fetchone()
    assert trans_id == (f"9_{1793606400123456}",)


def test_ts_defaults_to_now(conn, stations):
    add_card(conn, 42, balance=5000)
    assert conn.execute("SELECT * FROM validate_entry(42, 3)").fetchone() == (
        True, "Remaining Balance: 47.50")
    recorded = conn.execute("SELECT now() - ts < interval '1 minute' FROM card_events").fetchone()
    assert recorded == (True,)


def test_named_arguments_follow_the_contract(conn, stations):
    add_card(conn, 42, balance=5000)
    row = conn.execute(
        "SELECT * FROM validate_entry(card_id => 42, station_id => 3, ts => %s)", (at(),)
    ).fetchone()
    assert row == (True, "Remaining Balance: 47.50")

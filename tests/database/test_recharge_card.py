"""recharge_card: credits once, records the purchase, writes an alert row."""

from factories import add_card, at, balance, call, events, stream

PURCHASE = 2


def test_recharge_credits_the_amount_exactly_once(conn, stations):
    add_card(conn, 42, balance=1250, notify=1, name="Ada", phone=None, email="ada@example.org")
    assert call(conn, "recharge_card", 42, 2000, 9, at()) == (
        True, "Recharged: 20.00, Balance: 32.50")
    assert balance(conn, 42) == 3250
    assert events(conn) == [(42, at(), 9, PURCHASE, 2000, 1)]
    assert stream(conn, "card_alert_export") == [
        (42, at(), "Central Exchange", "Ada", None, "ada@example.org", 1,
         "Recharged: 20.00, Balance: 32.50")]


def test_recharged_card_can_ride(conn, stations):
    add_card(conn, 42, balance=0)
    call(conn, "recharge_card", 42, 500, 1, at())
    assert call(conn, "validate_entry", 42, 1, at(5)) == (True, "Remaining Balance: 2.50")


def test_unknown_card_is_refused_and_recorded(conn, stations):
    assert call(conn, "recharge_card", 77, 2000, 9, at()) == (False, "Card Invalid")
    assert events(conn) == [(77, at(), 9, PURCHASE, 0, 0)]
    assert stream(conn, "card_alert_export") == []


def test_disabled_card_is_refused_and_not_credited(conn, stations):
    add_card(conn, 42, balance=100, enabled=False)
    assert call(conn, "recharge_card", 42, 2000, 9, at()) == (False, "Card Disabled")
    assert balance(conn, 42) == 100
    assert events(conn) == [(42, at(), 9, PURCHASE, 0, 0)]
    assert stream(conn, "card_alert_export") == []

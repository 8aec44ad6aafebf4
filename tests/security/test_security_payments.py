"""A payment's idempotency covers what is paid: a transaction_id reused with another account
or amount is refused (MT011) and writes nothing; the same details get the recorded decision
back; ids made only of invisible characters are refused (MT007)."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest
from factories import at, call, counts

REUSED = ("transaction_id 'pay-B' was already used for another payment: account {} and amount"
          " {} differ from the recorded ones")


def refused(conn: psycopg.Connection, *args) -> tuple[str | None, str | None, str | None]:
    before = counts(conn)
    with pytest.raises(psycopg.Error) as error:
        call(conn, "evaluate_transaction", *args)
    assert counts(conn) == before
    diag = error.value.diag
    return error.value.sqlstate, diag.message_primary, diag.message_hint


def test_a_reused_transaction_id_with_other_details_is_refused(conn):
    assert call(conn, "evaluate_transaction", "pay-B", "7", Decimal("1.00"), at()) == (
        False, "default_pass", "Approved")
    hint = ("A transaction_id names one payment: repeat it only with the same account_id and"
            " amount (to get the recorded decision back), and give a new payment a new"
            " transaction_id.")
    assert refused(conn, "pay-B", "7", Decimal("20000.00"), at()) == (
        "MT011", REUSED.format("7", "20000.00"), hint)
    assert refused(conn, "pay-B", "999", Decimal("50000.00"), at()) == (
        "MT011", REUSED.format("999", "50000.00"), hint)
    assert refused(conn, "pay-B", "999", Decimal("1.00"), at()) == (
        "MT011", REUSED.format("999", "1.00"), hint)
    # The same payment again (1 and 1.00 are the same amount): the recorded decision.
    assert call(conn, "evaluate_transaction", "pay-B", "7", Decimal("1"), at(5)) == (
        False, "default_pass", "Approved")
    assert conn.execute("SELECT transaction_id, account_id, amount FROM risk_decisions"
                        ).fetchall() == [("pay-B", "7", Decimal("1.00"))]
    assert conn.execute("SELECT count(*) FROM transaction_decisions").fetchone() == (1,)


def test_a_batch_refuses_a_reused_transaction_id_as_single_calls_do(conn):
    call(conn, "evaluate_transaction", "pay-B", "7", Decimal("1.00"), at())
    before = counts(conn)
    for ids, accounts, amounts in ((["n-1", "pay-B"], ["7", "7"], ["3", "20000"]),
                                   (["n-1", "n-1"], ["7", "8"], ["3", "3"])):
        with pytest.raises(psycopg.Error) as error:
            conn.execute("SELECT * FROM evaluate_transactions(%s, %s, %s::numeric[])",
                         (ids, accounts, amounts))
        assert error.value.sqlstate == "MT011"
        assert counts(conn) == before


@pytest.mark.parametrize("transaction_id", [
    " \t\n", "\u200b", "\u200b\u200c\u200d\u2060\ufeff", "\x01\x7f", "\u00a0\u3000", "\u202e",
    " \u200b ",
])
def test_ids_of_only_invisible_characters_are_refused(conn, transaction_id):
    sqlstate, message, hint = refused(conn, transaction_id, "7", Decimal("1.00"), at())
    assert sqlstate == "MT007"
    assert message == "Invalid transaction_id: " + conn.execute(
        "SELECT quote_literal(%s)", (transaction_id,)).fetchone()[0]
    assert hint == ("A transaction_id is 1 to 200 characters, not only spaces, control or"
                    " zero-width characters.")


def test_visible_ids_with_invisible_characters_inside_are_accepted(conn):
    assert call(conn, "evaluate_transaction", "tx\u200b1", "7", Decimal("1.00"), at())[0] is False
    assert call(conn, "evaluate_transaction", "ü", "7", Decimal("1.00"), at())[0] is False

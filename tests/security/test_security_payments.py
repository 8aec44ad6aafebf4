"""A payment's idempotency covers what is paid: a transaction_id reused with another account
or amount is refused (MT011) and writes nothing; the same details get the recorded decision
back; ids made only of invisible characters are refused (MT007)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import psycopg
import pytest
from factories import at, call, counts
from kafka_fixtures import wait_until

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


def test_a_batch_racing_a_call_that_reuses_its_id_is_refused_not_approved(db, conn):
    # The batch's insert finds the id taken by a call that committed meanwhile, for a
    # payment of 1.00: its 20,000.00 of a high-risk account must not be answered with
    # that payment's "Approved".
    conn.execute("INSERT INTO risk_tags VALUES ('acct-hr', 3)")
    with psycopg.connect(db) as first, psycopg.connect(db, autocommit=True) as second, \
            ThreadPoolExecutor(1) as pool:
        assert call(first, "evaluate_transaction", "race-batch", "acct-hr", Decimal("1.00"),
                    at()) == (False, "default_pass", "Approved")
        pid = second.info.backend_pid
        batch = pool.submit(lambda: second.execute(
            "SELECT * FROM metro.evaluate_transactions(%s, %s, %s::numeric[], %s)",
            (["race-batch"], ["acct-hr"], ["20000.00"], [at()])).fetchall())
        wait_until(lambda: conn.execute("SELECT wait_event_type = 'Lock' FROM pg_stat_activity"
                                        " WHERE pid = %s", (pid,)).fetchone() == (True,),
                   10, "the batch to wait for the call's transaction_id")
        first.commit()
        with pytest.raises(psycopg.Error) as error:
            batch.result(timeout=10)
    assert error.value.sqlstate == "MT011"
    assert error.value.diag.message_primary == (
        "transaction_id 'race-batch' was already used for another payment: account acct-hr and"
        " amount 20000.00 differ from the recorded ones")
    assert conn.execute("SELECT transaction_id, amount FROM risk_decisions").fetchall() == [
        ("race-batch", Decimal("1.00"))]
    assert conn.execute("SELECT count(*) FROM transaction_decisions").fetchone() == (1,)


@pytest.mark.parametrize("transaction_id", [
    " \t\n", "\u200b", "\u200b\u200c\u200d\u2060\ufeff", "\x01\x7f", "\u00a0\u3000", "\u202e",
    " \u200b ",
])
def test_ids_of_only_invisible_characters_are_refused(conn, transaction_id):
    sqlstate, message, hint = refused(conn, transaction_id, "7", Decimal("1.00"), at())
    assert sqlstate == "MT007"
    assert message == "Invalid transaction_id: " + conn.execute(
        "SELECT quote_literal(%s)", (transaction_id,)).fetchone()[0]
    assert hint == ("A transaction_id is 1 to 200 characters, neither starting nor ending with a"
                    " space, a control or a zero-width character.")


def test_a_padded_account_id_cannot_escape_its_risk_tag(conn):
    # ' acct-hi' would be another account than the tagged 'acct-hi': a high amount
    # passed as the default risk level 1 did. Refused now, and so is a padded tag.
    conn.execute("INSERT INTO risk_tags VALUES ('acct-hi', 3)")
    for padded in (" acct-hi", "acct-hi ", "acct-hi\u200b"):
        assert refused(conn, "pay-1", padded, Decimal("20000.00"), at())[0] == "MT014"
    # A padded transaction_id would be a second payment beside 'pay-1'.
    assert refused(conn, "pay-1 ", "acct-hi", Decimal("20000.00"), at())[0] == "MT007"
    assert call(conn, "evaluate_transaction", "pay-1", "acct-hi", Decimal("20000.00"), at())[0] \
        is True
    with pytest.raises(psycopg.errors.CheckViolation) as error:
        conn.execute("INSERT INTO risk_tags VALUES ('acct-lo ', 1)")
    assert error.value.diag.constraint_name == "risk_tags_account_id_valid"
    assert conn.execute("SELECT account_id FROM risk_tags").fetchall() == [("acct-hi",)]


def test_visible_ids_with_invisible_characters_inside_are_accepted(conn):
    assert call(conn, "evaluate_transaction", "tx\u200b1", "7", Decimal("1.00"), at())[0] is False
    assert call(conn, "evaluate_transaction", "ü", "7", Decimal("1.00"), at())[0] is False


@pytest.mark.parametrize("account_id", ["", " \t", "\u200b", "a" * 201, " acct-hi", "acct-hi ",
                                        "acct-hi\u200b", "\ufeffacct-hi", "acct-hi\n",
                                        # Tags, variation selectors, Mongolian selectors,
                                        # the braille blank: invisible too.
                                        "acct-hi\U000e0020", "\U000e0100acct-hi",
                                        "acct-hi\u180b", "\u2800acct-hi", "acct-hi\ufffb"])
def test_invalid_account_ids_are_refused(conn, account_id):
    # An account_id of any length went into the decision's stream row: one of 190 MB made a
    # row the bridge could not read, and every outbound stream stopped behind it.
    sqlstate, message, hint = refused(conn, "pay-A", account_id, Decimal("1.00"), at())
    assert sqlstate == "MT014"
    assert message == "Invalid account_id: " + conn.execute(
        "SELECT quote_literal(left(%s, 40))", (account_id,)).fetchone()[0]
    assert hint == ("An account_id is 1 to 200 characters, neither starting nor ending with a"
                    " space, a control or a zero-width character.")
    before = counts(conn)
    with pytest.raises(psycopg.Error) as error:
        conn.execute("SELECT * FROM evaluate_transactions(%s, %s, %s::numeric[])",
                     (["pay-1", "pay-2"], ["7", account_id], ["1", "1"]))
    assert error.value.sqlstate == "MT014"
    assert counts(conn) == before
    # 200 characters are an account.
    assert call(conn, "evaluate_transaction", "pay-A", "a" * 200, Decimal("1.00"), at()) == (
        False, "default_pass", "Approved")

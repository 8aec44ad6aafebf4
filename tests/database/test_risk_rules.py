"""evaluate_transaction: the shipped rules at their boundaries for every risk level, rules
edited in SQL, one recorded decision per transaction_id, bad input, and the same rules
applied to recharges."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import psycopg
import pytest
from factories import add_card, at, balance, call, events, stream
from kafka_fixtures import wait_until

HIGH = ("high_risk_above_10000", "Blocked: amount above 10,000.00 from a high-risk account")
ELEVATED = ("elevated_risk_above_5000",
            "Blocked: amount above 5,000.00 up to 10,000.00 from a medium- or high-risk account")
PASS = ("default_pass", "Approved")


def tag(conn: psycopg.Connection, account_id: int | str, level: int) -> None:
    conn.execute("INSERT INTO risk_tags (account_id, risk_level) VALUES (%s, %s)",
                 (str(account_id), level))


def evaluate(conn: psycopg.Connection, transaction_id: str, account_id: int | str,
             amount: str | Decimal, ts=None) -> tuple:
    return call(conn, "evaluate_transaction", transaction_id, str(account_id), Decimal(amount),
                ts or at())


def decisions(conn: psycopg.Connection) -> list[tuple]:
    return [tuple(r) for r in conn.execute(
        "SELECT transaction_id, account_id, amount, ts, risk_level, blocked, rule, message"
        " FROM risk_decisions ORDER BY decided_at, transaction_id")]


def decision_stream(conn: psycopg.Connection) -> list[tuple]:
    return [tuple(r) for r in conn.execute(
        "SELECT transaction_id, account_id, amount, ts, risk_level, blocked, rule, message"
        " FROM transaction_decisions ORDER BY position")]


# (risk level, amount) -> the rule that decides; level None is an account without a tag.
BOUNDARIES = {
    "5000.00": {None: PASS, 1: PASS, 2: PASS, 3: PASS},
    "5000.01": {None: PASS, 1: PASS, 2: ELEVATED, 3: ELEVATED},
    "10000.00": {None: PASS, 1: PASS, 2: ELEVATED, 3: ELEVATED},
    "10000.01": {None: PASS, 1: PASS, 2: PASS, 3: HIGH},
}
CASES = [(amount, level, rule) for amount, by_level in BOUNDARIES.items()
         for level, rule in by_level.items()]


@pytest.mark.parametrize(("amount", "level", "rule"), CASES,
                         ids=[f"{a}-level{lv or 'untagged'}" for a, lv, _ in CASES])
def test_shipped_rules_at_their_boundaries(conn, amount, level, rule):
    if level is not None:
        tag(conn, 7, level)
    blocked = rule != PASS
    assert evaluate(conn, "t-1", 7, amount) == (blocked, *rule)
    recorded = (("t-1", "7", Decimal(amount), at(), level or 1, blocked, *rule))
    assert decisions(conn) == [recorded]
    assert decision_stream(conn) == [recorded]


def test_an_account_without_a_tag_counts_as_level_one(conn):
    tag(conn, 1, 3)
    assert evaluate(conn, "t-1", 2, "20000.00") == (False, *PASS)
    assert conn.execute("SELECT risk_level FROM risk_decisions").fetchone() == (1,)
    assert conn.execute("SELECT count(*) FROM risk_tags").fetchone() == (1,)


def test_a_rule_edited_in_sql_applies_to_the_next_call(conn):
    tag(conn, 7, 2)
    assert evaluate(conn, "t-1", 7, "6000.00") == (True, *ELEVATED)
    conn.execute("UPDATE risk_rules SET amount_range = '(8000,10000]'"
                 " WHERE rule = 'elevated_risk_above_5000'")
    assert evaluate(conn, "t-2", 7, "6000.00") == (False, *PASS)
    assert evaluate(conn, "t-3", 7, "8000.01") == (True, *ELEVATED)
    conn.execute("UPDATE risk_tags SET risk_level = 1 WHERE account_id = '7'")
    assert evaluate(conn, "t-4", 7, "8000.01") == (False, *PASS)
    conn.execute("INSERT INTO risk_rules (rule, rule_order, amount_range, min_risk_level, action,"
                 " reason) VALUES ('tiny_amounts', 5, '[0.01,1.00)', 1, 'block', 'Card testing')")
    assert evaluate(conn, "t-5", 7, "0.99") == (True, "tiny_amounts", "Card testing")
    assert evaluate(conn, "t-6", 7, "1.00") == (False, *PASS)


def test_rules_renumbered_in_one_statement(conn):
    conn.execute("UPDATE risk_rules SET rule_order = 40 - rule_order")  # reverses the order
    tag(conn, 7, 3)
    assert evaluate(conn, "t-1", 7, "20000.00") == (False, *PASS)


def test_a_duplicate_transaction_id_returns_the_recorded_decision(conn):
    tag(conn, 7, 3)
    first = evaluate(conn, "dup", 7, "12000.00", at(0))
    conn.execute("UPDATE risk_tags SET risk_level = 1")
    assert evaluate(conn, "dup", 7, "12000.00", at(5)) == first == (True, *HIGH)
    # Other details under the same id are refused (MT011): tests/test_security_payments.py.
    assert decisions(conn) == [("dup", "7", Decimal("12000.00"), at(0), 3, True, *HIGH)]
    assert len(decision_stream(conn)) == 1


def test_concurrent_calls_with_one_transaction_id_record_one_decision(db, conn):
    tag(conn, 7, 2)
    with psycopg.connect(db) as first, psycopg.connect(db, autocommit=True) as second, \
            ThreadPoolExecutor(1) as pool:
        assert call(first, "evaluate_transaction", "race", "7", Decimal("7000"), at()) == (
            True, *ELEVATED)
        pid = second.info.backend_pid
        second_call = pool.submit(call, second, "evaluate_transaction", "race", "7",
                                  Decimal("7000.00"), at())
        wait_until(lambda: conn.execute("SELECT wait_event_type = 'Lock' FROM pg_stat_activity"
                                        " WHERE pid = %s", (pid,)).fetchone() == (True,),
                   10, "the second call to wait for the first one's key")
        first.commit()
        assert second_call.result(timeout=10) == (True, *ELEVATED)  # the first decision
    assert len(decisions(conn)) == 1
    assert len(decision_stream(conn)) == 1


@pytest.mark.parametrize(("args", "sqlstate", "message"), [
    (("t", "7", Decimal("0"), at()), "MT003", "Transaction amount must be positive, below "
     "1,000,000,000,000, with at most two decimals: 0"),
    (("t", "7", Decimal("-5.00"), at()), "MT003", "Transaction amount must be positive, below "
     "1,000,000,000,000, with at most two decimals: -5.00"),
    (("t", "7", Decimal("5000.001"), at()), "MT003", "Transaction amount must be positive, below "
     "1,000,000,000,000, with at most two decimals: 5000.001"),
    (("t", "7", Decimal("1e12"), at()), "MT003", "Transaction amount must be positive, below "
     "1,000,000,000,000, with at most two decimals: 1000000000000"),
    (("", "7", Decimal("1"), at()), "MT007", "Invalid transaction_id: ''"),
    (("   ", "7", Decimal("1"), at()), "MT007", "Invalid transaction_id: '   '"),
    (("x" * 201, "7", Decimal("1"), at()), "MT007", f"Invalid transaction_id: '{'x' * 40}'"),
    ((None, "7", Decimal("1"), at()), "MT004", "evaluate_transaction: transaction_id must not be "
     "NULL"),
    (("t", None, Decimal("1"), at()), "MT004", "evaluate_transaction: account_id must not be NULL"),
    (("t", "7", None, at()), "MT004", "evaluate_transaction: amount must not be NULL"),
    (("t", "7", Decimal("1"), None), "MT004", "evaluate_transaction: ts must not be NULL"),
])
def test_bad_input_is_refused_and_writes_nothing(conn, args, sqlstate, message):
    with pytest.raises(psycopg.Error) as error:
        conn.execute("SELECT * FROM evaluate_transaction(%s, %s, %s::numeric, %s)", args)
    assert error.value.sqlstate == sqlstate
    assert error.value.diag.message_primary == message
    assert decisions(conn) == [] and decision_stream(conn) == []


def test_accounts_are_named_as_the_payment_system_names_them(conn):
    tag(conn, "account123", 3)
    assert evaluate(conn, "tx1001", "account123", "12000.00") == (True, *HIGH)
    assert evaluate(conn, "tx1002", "account1234", "12000.00") == (False, *PASS)
    assert [d[:3] for d in decisions(conn)] == [("tx1001", "account123", Decimal("12000.00")),
                                               ("tx1002", "account1234", Decimal("12000.00"))]


def test_rules_that_cover_nothing_are_an_error_not_a_decision(conn):
    conn.execute("DELETE FROM risk_rules WHERE rule = 'default_pass'")
    with pytest.raises(psycopg.Error) as error:
        evaluate(conn, "t-1", 7, "10.00")
    assert error.value.sqlstate == "MT008"
    assert error.value.diag.message_primary == (
        "No risk rule covers amount 10.00 for account 7 (risk level 1)")
    assert decisions(conn) == []


def test_bad_rules_and_tags_are_refused(conn):
    for statement in ("INSERT INTO risk_tags VALUES (1, 4)",
                      "UPDATE risk_rules SET action = 'review'",
                      "UPDATE risk_rules SET amount_range = 'empty'",
                      "UPDATE risk_rules SET min_risk_level = 0"):
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(statement)


def test_the_app_calls_evaluate_transaction_but_cannot_read_tags(conn):
    tag(conn, 7, 3)
    conn.execute("SET ROLE metro_app")
    assert evaluate(conn, "t-1", 7, "10000.01") == (True, *HIGH)
    for statement in ("SELECT * FROM risk_tags", "SELECT * FROM risk_decisions",
                      "UPDATE risk_rules SET action = 'pass'",
                      "SELECT * FROM risk_rule('7', 1)"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)
    conn.execute("SET ROLE metro_reader")
    assert len(conn.execute("SELECT * FROM risk_rules").fetchall()) == 3


def test_the_bridge_reads_the_decision_stream_as_json(conn):
    tag(conn, 7, 3)
    evaluate(conn, "pay-1", 7, "10000.01", at())
    conn.execute("SET ROLE metro_bridge")
    rows = conn.execute("SELECT key, value FROM bridge_batch('transaction_decisions', '0', 0, 10)"
                        ).fetchall()
    assert [(key, json.loads(value, parse_float=Decimal)) for key, value in rows] == [
        ("pay-1", {"transaction_id": "pay-1", "account_id": "7", "amount": Decimal("10000.01"),
                   "ts": "2026-11-02T08:00:00+00:00", "risk_level": 3, "blocked": True,
                   "rule": HIGH[0], "message": HIGH[1]})]
    with pytest.raises(psycopg.Error) as error:
        conn.execute("SELECT * FROM bridge_batch('risk_tags', '0', 0, 10)")
    assert error.value.sqlstate == "MT005"


PURCHASE = 2


def test_a_recharge_blocked_by_a_rule_credits_nothing(conn, stations):
    add_card(conn, 42, balance=100, notify=1)
    tag(conn, 42, 2)
    assert call(conn, "recharge_card", 42, 500001, 9, at()) == (False, ELEVATED[1])
    assert balance(conn, 42) == 100
    assert events(conn) == [(42, at(), 9, PURCHASE, 0, -1)]
    assert stream(conn, "fraud") == [(f"42_{int(at().timestamp() * 1_000_000)}", 42, at(), 9,
                                      PURCHASE, 500001)]
    assert stream(conn, "card_alert_export") == []
    assert decisions(conn) == []


def test_a_recharge_at_the_boundary_passes(conn, stations):
    add_card(conn, 42, balance=100)
    tag(conn, 42, 2)
    assert call(conn, "recharge_card", 42, 500000, 9, at()) == (
        True, "Recharged: 5000.00, Balance: 5001.00")
    assert events(conn) == [(42, at(), 9, PURCHASE, 500000, 1)]
    assert stream(conn, "fraud") == []


def test_recharge_rules_follow_sql_edits(conn, stations):
    add_card(conn, 42, balance=0)
    conn.execute("UPDATE risk_rules SET amount_range = '(40,)', min_risk_level = 1"
                 " WHERE rule = 'high_risk_above_10000'")
    assert call(conn, "recharge_card", 42, 4000, 9, at()) == (
        True, "Recharged: 40.00, Balance: 40.00")
    assert call(conn, "recharge_card", 42, 4001, 9, at(1)) == (False, HIGH[1])
    assert balance(conn, 42) == 4000

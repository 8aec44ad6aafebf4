"""A client's transaction isolation cannot change a decision: under REPEATABLE READ or
SERIALIZABLE the rules would read the transaction's older snapshot, and miss a swipe that a
concurrent call committed while this one waited for the card, or a risk tag an operator
raised since, so the deciding functions refuse them (MT013) and write nothing."""

from __future__ import annotations

import psycopg
import pytest
from factories import add_card, counts

CALLS = {
    "validate_entry": "SELECT * FROM validate_entry(81, 1)",
    "validate_entries": "SELECT * FROM validate_entries(ARRAY[81]::bigint[], ARRAY[1])",
    "process_exit": "SELECT * FROM process_exit(81, 2)",
    "recharge_card": "SELECT * FROM recharge_card(81, 500, 1)",
    "evaluate_transaction": "SELECT * FROM evaluate_transaction('tx-81', 'acct-81', 15.00)",
    "evaluate_transactions": "SELECT * FROM evaluate_transactions(ARRAY['tx-82'],"
                             " ARRAY['acct-81'], ARRAY[15.00])",
}


@pytest.mark.parametrize("isolation", ["REPEATABLE READ", "SERIALIZABLE"])
@pytest.mark.parametrize("function", sorted(CALLS))
def test_deciding_functions_refuse_an_isolation_that_would_hide_a_concurrent_change(
        conn, stations, function, isolation):
    add_card(conn, 81)
    before = counts(conn)
    # As a client's own session default would (ALTER ROLE ... SET needs no privilege).
    conn.execute(f"SET default_transaction_isolation = '{isolation.lower()}'")
    with pytest.raises(psycopg.Error) as error:
        conn.execute(CALLS[function])
    assert error.value.sqlstate == "MT013"
    assert error.value.diag.message_primary == (
        f"{function}: needs READ COMMITTED isolation, called in a {isolation} transaction")
    assert error.value.diag.message_hint == (
        "Call it in a READ COMMITTED transaction, PostgreSQL's default (check"
        " default_transaction_isolation).")
    conn.execute("SET default_transaction_isolation = 'read committed'")
    assert counts(conn) == before
    assert conn.execute(CALLS[function]).fetchone() is not None  # the default works

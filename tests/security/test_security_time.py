"""Client-chosen time: a metro_app caller may pass a ts only within settings.max_clock_skew of
now(); a member of metro_replay (and the schema's owner or a superuser) may pass any valid
ts; nobody may pass an infinite ts or one outside [2000-01-01, 2200-01-01). A refused ts
writes nothing. Exits that arrive out of order close an entry once."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from factories import add_card, at, call, counts, events
from psycopg import sql
from roles import login_role

CALLS = {
    "validate_entry": "SELECT * FROM validate_entry(42, 1, {})",
    "process_exit": "SELECT * FROM process_exit(42, 1, {})",
    "recharge_card": "SELECT * FROM recharge_card(42, 500, 1, {})",
    "record_train_event": "SELECT record_train_event(1, 1, 1, {})",
    "evaluate_transaction": "SELECT * FROM evaluate_transaction('t-1', '7', 1.00, {})",
    "validate_entries": "SELECT * FROM validate_entries('{{42,42}}', '{{1,2}}',"
                        " ARRAY[NULL, {}]::timestamptz[])",
    "evaluate_transactions": "SELECT * FROM evaluate_transactions('{{t-1,t-2}}', '{{7,7}}',"
                             " '{{1,2}}', ARRAY[NULL, {}]::timestamptz[])",
    "is_fraud": "SELECT is_fraud(42, 1, {})",
}
# What the error names: evaluate_transactions raises what evaluate_transaction called one by
# one raises first (tests/test_risk_batch.py).
NAMED = {"validate_entries": "validate_entries: ts[2]",
         "evaluate_transactions": "evaluate_transaction: ts"}
INVALID = ["infinity", "-infinity", "0001-01-01 00:00:00+00", "4713-11-24 00:00:00+00 BC",
           "294276-12-31 00:00:00+00", "1999-12-31 23:59:59.999999+00", "2200-01-01 00:00:00+00"]
RANGE_HINT = ("Pass the time the event happened (timestamptz, e.g. 2026-11-02 08:00:00+00), or"
              " omit ts to use now().")
SKEW_HINT = ("Omit ts to use now(), fix the client's clock, or run simulations and backfills as"
             " a member of metro_replay.")


@pytest.fixture
def turnstile(server_dsn: str) -> Iterator[str]:
    """A role that is a member of metro_app only, like a turnstile's login."""
    with login_role(server_dsn, "turnstile", "metro_app") as name:
        yield name


def as_login(conn: psycopg.Connection, role: str) -> None:
    """Make conn's session_user role (SET ROLE would keep the superuser as session_user)."""
    conn.execute(sql.SQL("SET SESSION AUTHORIZATION {}").format(sql.Identifier(role)))


def refused(conn: psycopg.Connection, statement: str, login: str | None = None) -> tuple:
    """(sqlstate, message, hint) of statement, run as login (default: the superuser), and
    checks that it wrote nothing."""
    conn.execute("RESET SESSION AUTHORIZATION")
    before = counts(conn)
    if login:
        as_login(conn, login)
    try:
        with pytest.raises(psycopg.Error) as error:
            conn.execute(statement)
    finally:
        conn.execute("RESET SESSION AUTHORIZATION")
    assert counts(conn) == before
    return error.value.sqlstate, error.value.diag.message_primary, error.value.diag.message_hint


@pytest.fixture
def card(conn, stations) -> None:
    add_card(conn, 42, balance=5000, notify=1)


@pytest.mark.usefixtures("card")
@pytest.mark.parametrize("function", CALLS)
@pytest.mark.parametrize("value", INVALID)
def test_an_invalid_ts_is_refused_for_everyone(conn, turnstile, function, value):
    statement = CALLS[function].format(sql.Literal(value).as_string(conn) + "::timestamptz")
    shown = conn.execute("SELECT %s::timestamptz::text", (value,)).fetchone()[0]
    expected = ("MT009", f"{NAMED.get(function, function + ': ts')} must be a finite time"
                         f" from 2000-01-01 up to 2200-01-01 UTC, got {shown}", RANGE_HINT)
    assert refused(conn, statement) == expected
    assert refused(conn, statement, turnstile) == expected


@pytest.mark.usefixtures("card")
@pytest.mark.parametrize("function", CALLS)
def test_metro_app_may_pass_a_ts_only_within_the_clock_skew(conn, turnstile, function):
    late = CALLS[function].format("now() - interval '11 minutes'")
    sqlstate, message, hint = refused(conn, late, turnstile)
    assert sqlstate == "MT010" and hint == SKEW_HINT
    assert message.startswith(NAMED.get(function, function + ": ts") + " ")
    assert " is more than 00:10:00 away from the server's clock (" in message
    early = CALLS[function].format("now() + interval '11 minutes'")
    assert refused(conn, early, turnstile)[0] == "MT010"
    # Within the skew (store and forward), and as the superuser (replay): accepted.
    as_login(conn, turnstile)
    conn.execute(CALLS[function].format("now() - interval '9 minutes'"))
    conn.execute("RESET SESSION AUTHORIZATION")
    conn.execute(CALLS[function].replace("t-1", "t-3").replace("t-2", "t-4").format(
        "now() - interval '2 years'"))


def test_the_skew_is_a_setting_and_metro_replay_may_pass_any_valid_ts(conn, stations, turnstile,
                                                                      server_dsn):
    add_card(conn, 42, balance=5000)
    conn.execute("UPDATE settings SET max_clock_skew = '1 hour'")
    as_login(conn, turnstile)
    conn.execute("SELECT validate_entry(42, 1, now() - interval '59 minutes')")
    with pytest.raises(psycopg.Error) as error:
        conn.execute("SELECT validate_entry(42, 1, now() - interval '61 minutes')")
    assert error.value.sqlstate == "MT010"
    # SET ROLE cannot widen what the login may do.
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SET ROLE metro_replay")
    conn.execute("RESET SESSION AUTHORIZATION")
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("GRANT metro_replay TO {}").format(sql.Identifier(turnstile)))
    as_login(conn, turnstile)
    assert call(conn, "validate_entry", 42, 1, at()) == (True, "Remaining Balance: 45.00")
    conn.execute("RESET SESSION AUTHORIZATION")


@pytest.mark.usefixtures("card")
def test_a_transaction_held_open_cannot_carry_its_start_past_the_skew(conn, turnstile):
    """now(), the default ts, is when the transaction began: held open past the skew, it
    would record swipes in the past, out of the fraud rules' sight. The skew is measured
    against the server's clock."""
    conn.execute("UPDATE settings SET max_clock_skew = '1 second'")
    before = counts(conn)
    with conn.transaction():
        as_login(conn, turnstile)
        conn.execute("SELECT pg_sleep(1.2)")
        for function, statement in CALLS.items():
            with pytest.raises(psycopg.Error) as error, conn.transaction():
                conn.execute(statement.format("now()"))
            name = {"validate_entries": "validate_entries: ts[1]"}.get(
                function, NAMED.get(function, function + ": ts"))
            assert (error.value.sqlstate, error.value.diag.message_primary) == (
                "MT010", f"{name} is now(), the start of a transaction open for 00:00:01, more"
                         " than 00:00:01 ago")
            assert error.value.diag.message_hint == (
                "Call it in a short transaction of its own: now() is the time the transaction"
                " began.")
        # A NULL ts array is now() for every swipe: named ts.
        with pytest.raises(psycopg.Error) as error, conn.transaction():
            conn.execute("SELECT * FROM validate_entries('{42}', '{1}', NULL)")
        assert error.value.diag.message_primary == (
            "validate_entries: ts is now(), the start of a transaction open for 00:00:01, more"
            " than 00:00:01 ago")
        # The server's clock, passed as ts, is within the skew.
        assert conn.execute("SELECT * FROM validate_entry(42, 1, clock_timestamp())"
                            ).fetchone()[0] is True
        conn.execute("RESET SESSION AUTHORIZATION")
    assert counts(conn)["card_events"] == before["card_events"] + 1


# ts arrays a caller may shape as it likes: indexed from 0 or 5, or of two dimensions. The
# batch functions read every array element by element (unnest), and so does the check: it
# once looked the refused element up by subscript, found NULL (read as now()) and let a
# swipe dated 2001, or infinity, through.
SHAPED = [("'{{\"2001-01-01 00:00:00+00\"}}'", 1), ("'[0:0]={\"2001-01-01 00:00:00+00\"}'", 1),
          ("'[5:5]={infinity}'", 1), ("'{{NULL},{\"2001-01-01 00:00:00+00\"}}'", 2),
          ("'[0:1]={NULL,infinity}'", 2)]


@pytest.mark.usefixtures("card")
@pytest.mark.parametrize(("array", "ordinal"), SHAPED)
def test_a_ts_array_of_any_shape_is_checked_element_by_element(conn, turnstile, array, ordinal):
    cards, stations = ("'{{42},{42}}'", "'{{1},{2}}'") if ordinal == 2 else ("'{42}'", "'{1}'")
    statement = f"SELECT * FROM validate_entries({cards}, {stations}, {array}::timestamptz[])"
    sqlstate, message, _ = refused(conn, statement, turnstile)
    if "infinity" in array:
        assert (sqlstate, message) == (
            "MT009", f"validate_entries: ts[{ordinal}] must be a finite time from 2000-01-01 up"
                     " to 2200-01-01 UTC, got infinity")
    else:
        assert sqlstate == "MT010"
        assert message.startswith(f"validate_entries: ts[{ordinal}] 2001-01-01 ")
    payments = ("'{{t-1},{t-2}}', '{{7},{7}}', '{{1},{2}}'" if ordinal == 2
                else "'{t-1}', '{7}', '{1}'")
    assert refused(conn, f"SELECT * FROM evaluate_transactions({payments}, {array}::timestamptz[])",
                   turnstile)[0] == sqlstate


def test_going_back_in_time_no_longer_evades_the_fraud_rules(conn, stations, turnstile):
    """Ten entries now: an eleventh is fraud (rule 3). Before, a client passing a ts an hour
    back saw an empty window and was let in."""
    add_card(conn, 42, balance=100_000, card_type=0)
    as_login(conn, turnstile)
    for n in range(10):
        conn.execute("SELECT validate_entry(42, %s, now() - make_interval(secs => %s))",
                     (1 + n % 2, 20 * (10 - n)))
    assert conn.execute("SELECT * FROM validate_entry(42, 1)").fetchone() == (
        False, "Fraudulent transaction")
    with pytest.raises(psycopg.Error) as error:
        conn.execute("SELECT * FROM validate_entry(42, 1, now() - interval '1 hour 1 second')")
    assert error.value.sqlstate == "MT010"
    conn.execute("RESET SESSION AUTHORIZATION")


def test_exits_out_of_order_close_an_entry_once(conn, stations):
    add_card(conn, 42, balance=5000)
    assert call(conn, "validate_entry", 42, 1, at())[0] is True
    for minutes in (30, 10, 20):
        assert call(conn, "process_exit", 42, 4, at(minutes=minutes)) == (
            (True, "Exit recorded") if minutes == 30
            else (True, "Exit recorded without an open entry"))
    assert conn.execute("SELECT card_id, entry_station, entry_ts, exit_station, exit_ts"
                        " FROM trips").fetchall() == [(42, 1, at(), 4, at(minutes=30))]
    # A new entry after those exits opens a new trip, closed by its own exit.
    assert call(conn, "validate_entry", 42, 2, at(minutes=40))[0] is True
    assert call(conn, "process_exit", 42, 3, at(minutes=50)) == (True, "Exit recorded")
    assert call(conn, "process_exit", 42, 3, at(minutes=45)) == (
        True, "Exit recorded without an open entry")
    assert len(conn.execute("SELECT * FROM trips").fetchall()) == 2
    assert len(events(conn, 42)) == 7


def test_an_infinite_ts_never_reaches_a_stream(conn, stations):
    add_card(conn, 42, balance=100, notify=1)
    with pytest.raises(psycopg.Error):
        conn.execute("SELECT validate_entry(42, 1, 'infinity')")
    assert conn.execute("SELECT count(*) FROM card_alert_export").fetchone() == (0,)

"""Roles: metro_app only calls functions, metro_reader reads views, metro_bridge reads streams."""

import psycopg
import pytest
from factories import add_card, at


def as_role(conn, role):
    conn.execute(f"SET ROLE {role}")


def test_app_calls_validate_entry_but_cannot_touch_cards(conn, stations):
    add_card(conn, 42, balance=1000)
    as_role(conn, "metro_app")
    assert conn.execute("SELECT * FROM validate_entry(42, 1, %s)", (at(),)).fetchone() == (
        True, "Remaining Balance: 7.50")
    assert conn.execute("SELECT is_fraud(42, 1, %s)", (at(0.5),)).fetchone() == (True,)
    for statement in ("SELECT balance FROM cards", "UPDATE cards SET balance = 1000000",
                      "SELECT * FROM card_events", "SELECT * FROM fraud"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)
    conn.execute("RESET ROLE")
    assert conn.execute("SELECT balance FROM cards").fetchone() == (750,)


def test_app_cannot_call_internal_helpers(conn, stations):
    as_role(conn, "metro_app")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT fraud_rule(42, now())")


def test_reader_reads_views_only(conn, stations):
    as_role(conn, "metro_reader")
    assert conn.execute("SELECT * FROM busiest_stations").fetchall() == []
    assert conn.execute("SELECT * FROM station_wait_times").fetchall() == []
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT * FROM cards")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT validate_entry(42, 1)")


def test_bridge_reads_streams_only(conn, stations):
    add_card(conn, 42, balance=100, notify=1)
    conn.execute("SELECT validate_entry(42, 1, %s)", (at(),))
    as_role(conn, "metro_bridge")
    assert conn.execute("SELECT card_id, alert_message FROM card_alert_export").fetchall() == [
        (42, "Insufficient Balance")]
    assert conn.execute("SELECT count(*) FROM fraud").fetchone() == (0,)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT * FROM cards")


def test_writing_functions_are_security_definer_with_fixed_search_path(conn):
    rows = conn.execute("""
        SELECT p.proname, p.prosecdef, p.proconfig
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'metro' AND p.proname IN
          ('validate_entry', 'process_exit', 'recharge_card', 'is_fraud', 'record_train_event')
        ORDER BY p.proname""").fetchall()
    assert [r[0] for r in rows] == ["is_fraud", "process_exit", "recharge_card",
                                    "record_train_event", "validate_entry"]
    # Beside the fixed search_path, a function may only ask for generic plans.
    assert all(secdef and config[0] == "search_path=metro, pg_temp"
               and set(config[1:]) <= {"plan_cache_mode=force_generic_plan"}
               for _, secdef, config in rows)

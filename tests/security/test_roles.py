"""Roles: metro_app only calls functions, metro_reader reads views, metro_bridge reads streams and
writes through its functions; the full list of every privilege any of them holds."""

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
        conn.execute("SELECT fraud_rule(42, now(), interval '1 hour', 10, 5)")


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
    # Beside the fixed search_path, a function may only ask for generic plans that
    # never scan a table whole, without JIT.
    assert all(secdef and config[0] == "search_path=metro, pg_temp"
               and set(config[1:]) <= {"plan_cache_mode=force_generic_plan",
                                       "enable_seqscan=off", "jit=off"}
               for _, secdef, config in rows)


# Every privilege any of these roles holds on an object of schema metro; anything not listed
# is held by none of them (PUBLIC included). metro_replay holds nothing: its members may pass
# any valid ts to the functions their other roles can call. metro_bridge applies the inbound
# topics, so it calls recharge_card, record_train_event and evaluate_transaction(s) itself.
ROLES = ("public", "metro_app", "metro_reader", "metro_bridge", "metro_replay", "metro_worker")
READER_VIEWS = ("acceptance_rate", "busiest_stations", "card_export_stats",
                "dashboard_fraud_feed", "dashboard_payments", "dashboard_seconds",
                "dashboard_stations", "dashboard_totals", "dashboard_trains",
                "station_second_stats", "station_wait_times", "swipes_per_second")
STREAMS = ("card_alert_export", "fraud", "transaction_decisions", "trips")
TABLE_PRIVILEGES: dict[tuple[str, str], set[str]] = {
    **{(view, "metro_reader"): {"SELECT"} for view in READER_VIEWS},
    **{(stream, "metro_bridge"): {"SELECT"} for stream in STREAMS},
    **{("error_codes", role): {"SELECT"}
       for role in ("metro_app", "metro_reader", "metro_bridge")},
    ("risk_rules", "metro_reader"): {"SELECT"},
    **{(table, "metro_reader"): {"SELECT"} for table in (
        "streams", "bridge_cursors", "bridge_state", "bridge_inbound_offsets",
        "bridge_dead_letters", "worker_cursors", "worker_state")},
    **{(table, "metro_bridge"): {"SELECT"} for table in (
        "streams", "bridge_settings", "bridge_cursors", "bridge_state",
        "bridge_outbound_dead_letters")},
    **{(table, "metro_bridge"): {"SELECT", "INSERT", "UPDATE"}
       for table in ("bridge_inbound_offsets", "bridge_dead_letters")},
}
PUBLIC_FUNCTIONS = (
    "validate_entry(bigint,integer,timestamp with time zone)",
    "validate_entries(bigint[],integer[],timestamp with time zone[])",
    "process_exit(bigint,integer,timestamp with time zone)",
    "is_fraud(bigint,integer,timestamp with time zone)",
    "recharge_card(bigint,integer,integer,timestamp with time zone)",
    "record_train_event(integer,integer,integer,timestamp with time zone)",
    "evaluate_transaction(text,text,numeric,timestamp with time zone)",
    "evaluate_transactions(text[],text[],numeric[],timestamp with time zone[])",
)
BRIDGE_FUNCTIONS = (
    "bridge_ack(text,xid8,bigint,bigint)", "bridge_batch(text,xid8,bigint,integer)",
    "bridge_has_rows(text,xid8,bigint)", "bridge_horizon()", "bridge_lag(bigint)",
    "bridge_outbound_dead_letter(text,xid8,bigint,text,text,text)",
    "bridge_prune(interval,integer)", "bridge_release_lease()", "bridge_renew_lease(interval)",
    "bridge_report_error(text)", "bridge_stream_key(text)", "bridge_take_lease(text,interval)",
    "schema_revision()",
    # Inbound topics: RECHARGE, TRAINTOPIC, transaction_topic.
    "recharge_card(bigint,integer,integer,timestamp with time zone)",
    "record_train_event(integer,integer,integer,timestamp with time zone)",
    "evaluate_transaction(text,text,numeric,timestamp with time zone)",
    "evaluate_transactions(text[],text[],numeric[],timestamp with time zone[])",
)
# The worker keeps derived data current and runs maintenance, under its own lease.
WORKER_FUNCTIONS = (
    "create_partitions(date,date)", "run_maintenance()", "run_maintenance_until_done()",
    "run_rollup(integer)",
    "worker_lag(bigint)", "worker_release_lease(text)", "worker_report_error(text)",
    "worker_take_lease(text,interval)", "schema_revision()",
)
EXECUTE: dict[str, set[str]] = {}
for role, functions in (("metro_app", PUBLIC_FUNCTIONS), ("metro_bridge", BRIDGE_FUNCTIONS),
                        ("metro_reader", ("bridge_lag(bigint)", "bridge_horizon()",
                                          "worker_lag(bigint)")),
                        ("metro_worker", WORKER_FUNCTIONS)):
    for function in functions:
        EXECUTE.setdefault(function, set()).add(role)


def test_every_role_holds_exactly_the_documented_privileges(conn):
    relations = conn.execute(
        "SELECT c.relname, c.relkind FROM pg_class c WHERE c.relnamespace = 'metro'::regnamespace"
        " AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') ORDER BY 1").fetchall()
    held: dict[tuple[str, str], set[str]] = {}
    for name, kind in relations:
        kinds = (("USAGE", "SELECT", "UPDATE") if kind == "S" else
                 ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"))
        check = "has_sequence_privilege" if kind == "S" else "has_table_privilege"
        for role in ROLES:
            privileges = {p for p in kinds if conn.execute(
                f"SELECT {check}(%s, %s, %s)", (role, f"metro.{name}", p)).fetchone()[0]}
            if privileges:
                held[(name, role)] = privileges
    assert held == TABLE_PRIVILEGES
    # Column privileges would not show above: there are none.
    assert conn.execute("SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
                        " WHERE c.relnamespace = 'metro'::regnamespace AND a.attacl IS NOT NULL"
                        ).fetchone() == (0,)
    functions = [f for (f,) in conn.execute(
        "SELECT p.oid::regprocedure::text FROM pg_proc p"
        " WHERE p.pronamespace = 'metro'::regnamespace ORDER BY 1")]
    assert set(EXECUTE) <= set(functions)
    executable = {}
    for function in functions:
        roles = {role for role in ROLES if conn.execute(
            "SELECT has_function_privilege(%s, %s, 'EXECUTE')", (role, f"metro.{function}")
        ).fetchone()[0]}
        if roles:
            executable[function] = roles
    assert executable == EXECUTE
    # metro_replay only qualifies the time its members may pass; the bridge is one.
    assert conn.execute("SELECT pg_has_role('metro_bridge', 'metro_replay', 'MEMBER'),"
                        " pg_has_role('metro_app', 'metro_replay', 'MEMBER')").fetchone() == (
        True, False)


def test_helpers_are_not_executable_by_public(conn):
    for helper in ("cents_text(bigint)", "fraud_trans_id(bigint, timestamptz)",
                   "raise_unknown_station(integer)", "raise_null_argument(text, text)",
                   "fraud_rule(bigint, timestamptz, interval, integer, integer)",
                   "register_stream(text, text, text, text)",
                   "checked_ts(text, text, timestamptz)",
                   "entry_outcome(boolean, smallint, integer, timestamptz, integer, boolean,"
                   " timestamptz)"):
        assert conn.execute("SELECT has_function_privilege('public', %s, 'EXECUTE')",
                            (f"metro.{helper}",)).fetchone() == (False,), helper

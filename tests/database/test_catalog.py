"""The catalog explains itself and every fact has one owner: the tree's install order,
comments on every object, the error codes and the streams registry."""

from __future__ import annotations

import re

import psycopg
import pytest
from factories import at

from metro import config, schema

STREAMS = [("card_alert_export", "CARD_ALERT_EXPORT", "card_id", "ts"),
           ("fraud", "FRAUD", "trans_id", "ts"),
           ("transaction_decisions", "transaction_decisions", "transaction_id", "ts"),
           ("trips", "TRIPS", "trip_id", "exit_ts")]


def tree_text() -> dict[str, str]:
    return {f"{path.parent.name}/{path.name}": path.read_text() for path in schema.sql_tree()}


def test_the_install_order_lists_every_file_of_the_tree_once():
    listed = [f"{directory}/{name}" for directory, name in schema.TREE]
    on_disk = sorted(f"{d.name}/{p.name}" for d in (config.SQL_DIR, config.PROCEDURES_DIR)
                     for p in d.glob("*.sql"))
    assert sorted(listed) == on_disk
    assert len(set(listed)) == len(listed)
    assert not any(re.match(r"\d", name) for _, name in schema.TREE)


def test_the_tree_is_the_current_schema_without_change_steps():
    for name, text in tree_text().items():
        if not name.startswith("sql/"):
            continue  # function bodies in procedures/ update and delete rows
        for line in text.splitlines():
            assert not re.match(r"\s*(ALTER (TABLE|DOMAIN|VIEW|TYPE)|DROP |UPDATE |DELETE )",
                                line), (name, line)


def test_every_object_has_a_comment(conn):
    missing = conn.execute("""
        SELECT 'function ' || p.oid::regprocedure FROM pg_proc p
        WHERE p.pronamespace = 'metro'::regnamespace AND obj_description(p.oid, 'pg_proc') IS NULL
        UNION ALL
        SELECT 'relation ' || c.relname FROM pg_class c
        WHERE c.relnamespace = 'metro'::regnamespace AND c.relkind IN ('r', 'v', 'p')
          AND c.relname <> 'alembic_version' AND obj_description(c.oid, 'pg_class') IS NULL
        UNION ALL
        SELECT 'column ' || c.relname || '.' || a.attname FROM pg_class c
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        WHERE c.relnamespace = 'metro'::regnamespace AND c.relkind IN ('r', 'p')
          AND NOT c.relispartition  -- a partition's columns are its parent's
          AND c.relname <> 'alembic_version' AND col_description(c.oid, a.attnum) IS NULL
        ORDER BY 1""").fetchall()
    assert missing == []


def test_public_functions_say_what_they_return(conn):
    described = dict(conn.execute(
        "SELECT p.proname, obj_description(p.oid, 'pg_proc') FROM pg_proc p"
        " WHERE p.pronamespace = 'metro'::regnamespace"))
    assert described["validate_entry"].startswith("Decides an entry swipe: (accepted, message)")
    assert "Fraudulent transaction" in described["validate_entry"]
    assert described["register_stream"].startswith("Makes a table of schema metro a stream")


def test_error_codes_list_every_code_the_functions_raise(conn):
    codes = dict(conn.execute("SELECT sqlstate, row_level FROM error_codes"))
    raised = {code for text in tree_text().values()
              for code in re.findall(r"ERRCODE = '([0-9A-Z]{5})'", text)}
    # register_stream's missing table and column concern the schema's author, not input.
    assert raised - set(codes) == {"42P01", "42703"}
    assert {code for code in codes if code.startswith("MT")} == {f"MT{n:03}" for n in range(1, 16)}
    assert codes["MT001"] is True and codes["MT006"] is False and codes["MT008"] is False
    assert codes["MT009"] is codes["MT010"] is codes["MT011"] is True and codes["MT012"] is False
    assert codes["MT013"] is False and codes["MT014"] is codes["MT015"] is True
    assert codes["23514"] is True and codes["22023"] is True


@pytest.mark.parametrize("role", ["metro_app", "metro_reader", "metro_bridge"])
def test_every_role_reads_the_error_codes(conn, role):
    conn.execute(f"SET ROLE {role}")
    assert conn.execute("SELECT name, row_level FROM error_codes WHERE sqlstate = 'MT001'"
                        ).fetchone() == ("unknown_station", True)


def test_the_streams_registry_owns_topic_key_and_time(conn):
    assert conn.execute("SELECT stream, topic, key_column, time_column FROM streams"
                        " ORDER BY stream").fetchall() == STREAMS
    assert conn.execute("SELECT stream, topic FROM bridge_lag() ORDER BY stream"
                        ).fetchall() == [s[:2] for s in STREAMS]
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        conn.execute("INSERT INTO bridge_cursors (stream) VALUES ('cards')")


def test_bridge_lag_reads_the_time_column_of_the_registry(conn, stations):
    conn.execute("INSERT INTO cards (card_id, balance) VALUES (1, 1000)")
    conn.execute("SELECT validate_entry(1, 1, %s)", (at(),))
    conn.execute("SELECT process_exit(1, 2, %s)", (at(minutes=9),))
    assert conn.execute("SELECT pending, oldest_pending FROM bridge_lag() WHERE stream = 'trips'"
                        ).fetchone() == (1, at(minutes=9))


def test_one_statement_makes_a_table_a_stream(conn):
    conn.execute("""CREATE TABLE metro.parcels (
        position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
        parcel_id text NOT NULL, sent_at timestamptz NOT NULL)""")
    conn.execute("SELECT register_stream('parcels', 'PARCELS', 'parcel_id', 'sent_at')")
    conn.execute("INSERT INTO metro.parcels (parcel_id, sent_at) VALUES ('p1', %s)", (at(),))
    assert conn.execute(
        "SELECT stream, topic, delivered, pending, oldest_pending FROM bridge_lag()"
        " WHERE stream = 'parcels'").fetchone() == ("parcels", "PARCELS", 0, 1, at())
    assert conn.execute(
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'metro.parcels'::regclass"
        " AND tgname = 'parcels_notify_bridge'").fetchone() == (1,)
    assert conn.execute("SELECT to_regclass('metro.parcels_txid_position') IS NOT NULL"
                        ).fetchone() == (True,)
    conn.execute("SET ROLE metro_bridge")
    batch = conn.execute("SELECT key, value FROM bridge_batch('parcels', '0', 0, 10)").fetchall()
    assert batch == [("p1", '{"parcel_id":"p1","sent_at":"2026-11-02T08:00:00+00:00"}')]
    assert conn.execute("SELECT bridge_ack('parcels', txid, position, 1) FROM metro.parcels"
                        ).fetchall() == [(True,)]
    conn.execute("RESET ROLE")
    # Registering again changes the topic and keeps the cursor.
    conn.execute("SELECT register_stream('parcels', 'PARCELS_V2', 'parcel_id', 'sent_at')")
    assert conn.execute("SELECT topic, delivered, pending FROM bridge_lag()"
                        " WHERE stream = 'parcels'").fetchone() == ("PARCELS_V2", 1, 0)


def test_no_table_writes_two_indexes_on_the_same_columns(conn):
    """card_alert_export had its primary key (card_id, position) twice: register_stream
    added the stream's key index on the same columns, one more index written per row."""
    assert conn.execute("""
        SELECT a.indexrelid::regclass::text, b.indexrelid::regclass::text
        FROM pg_index a
        JOIN pg_index b ON b.indrelid = a.indrelid AND b.indexrelid > a.indexrelid
                       AND b.indkey::text = a.indkey::text AND b.indclass::text = a.indclass::text
                       AND b.indexprs IS NULL AND a.indexprs IS NULL
                       AND b.indpred IS NULL AND a.indpred IS NULL
        JOIN pg_class c ON c.oid = a.indrelid
        WHERE c.relnamespace = 'metro'::regnamespace""").fetchall() == []
    # A stream whose primary key starts with (key, position) reads its keys through it.
    conn.execute("""CREATE TABLE metro.parcels (
        position bigint GENERATED ALWAYS AS IDENTITY,
        txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
        parcel_id text NOT NULL, sent_at timestamptz NOT NULL,
        PRIMARY KEY (parcel_id, position))""")
    conn.execute("SELECT register_stream('parcels', 'PARCELS', 'parcel_id', 'sent_at')")
    assert conn.execute("SELECT indexrelid::regclass::text FROM pg_index"
                        " WHERE indrelid = 'metro.parcels'::regclass ORDER BY 1").fetchall() == [
        ("parcels_pkey",), ("parcels_txid_position",)]


def test_only_a_valid_btree_index_serves_as_a_streams_key_index(conn):
    """A BRIN index, or one a failed CREATE INDEX CONCURRENTLY left invalid, starts with
    (key, position) too but cannot find a key's rows: the stream gets its own."""
    conn.execute("""CREATE TABLE metro.parcels (
        position bigint GENERATED ALWAYS AS IDENTITY,
        txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
        parcel_id text NOT NULL, sent_at timestamptz NOT NULL)""")
    conn.execute("CREATE INDEX parcels_brin ON metro.parcels USING brin (parcel_id, position)")
    conn.execute("CREATE INDEX parcels_broken ON metro.parcels (parcel_id, position)")
    conn.execute("UPDATE pg_index SET indisvalid = false"
                 " WHERE indexrelid = 'metro.parcels_broken'::regclass")
    conn.execute("SELECT register_stream('parcels', 'PARCELS', 'parcel_id', 'sent_at')")
    assert conn.execute("SELECT indexrelid::regclass::text FROM pg_index"
                        " WHERE indrelid = 'metro.parcels'::regclass ORDER BY 1").fetchall() == [
        ("parcels_brin",), ("parcels_broken",), ("parcels_key_position",),
        ("parcels_txid_position",)]


@pytest.mark.parametrize(("args", "sqlstate", "message"), [
    (("nowhere", "NOWHERE", "id", "ts"), "42P01", "register_stream: no table metro.nowhere"),
    (("cards", "CARDS", "card_id", "expires"), "42703",
     "register_stream: table metro.cards has no column position"),
    (("trips", "TRIPS", "trip_id", "ended"), "42703",
     "register_stream: table metro.trips has no column ended"),
])
def test_registering_a_table_that_is_no_stream_is_refused(conn, args, sqlstate, message):
    before = conn.execute("SELECT * FROM streams ORDER BY stream").fetchall()
    with pytest.raises(psycopg.Error) as error:
        conn.execute("SELECT register_stream(%s, %s, %s, %s)", args)
    assert (error.value.sqlstate, error.value.diag.message_primary) == (sqlstate, message)
    assert error.value.diag.message_hint
    assert conn.execute("SELECT * FROM streams ORDER BY stream").fetchall() == before


def test_each_rule_is_one_inlinable_sql_function(conn):
    rows = conn.execute(
        "SELECT p.proname, l.lanname, p.prosecdef, p.proconfig, p.provolatile"
        " FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang"
        " WHERE p.pronamespace = 'metro'::regnamespace"
        "   AND p.proname IN ('fraud_rule', 'entry_outcome', 'risk_rule', 'payment_refusal')"
        " ORDER BY 1").fetchall()
    assert [(name, lang, secdef, config) for name, lang, secdef, config, _ in rows] == [
        (name, "sql", False, None)
        for name in ("entry_outcome", "fraud_rule", "payment_refusal", "risk_rule")]
    assert all(volatility in ("s", "i") for *_, volatility in rows)
    assert not conn.execute("SELECT to_regproc('metro.match_risk_rule')").fetchone()[0]


def test_the_exits_read_is_inlined(conn):
    """process_exit's read of the card's latest entry or exit must be inlined, so that its
    bounds prune the partitions when the plan starts (revision 0027)."""
    plan = conn.execute(
        "EXPLAIN (FORMAT JSON) SELECT * FROM metro.latest_entry_or_exit(7, now(),"
        " now() - interval '1 day')").fetchone()[0]

    def nodes(node: dict) -> list[str]:
        return [node["Node Type"], *(n for child in node.get("Plans", []) for n in nodes(child))]

    assert "Function Scan" not in nodes(plan[0]["Plan"])
    assert nodes(plan[0]["Plan"])[0] == "Limit"


def test_the_entry_outcome_is_inlined_as_one_case(conn):
    """validate_entry compiles the outcome's expression in every transaction: it must be
    inlined (no function call), and one CASE, not one per field (revision 0026)."""
    plan = conn.execute(
        "EXPLAIN (VERBOSE, FORMAT JSON)"
        " SELECT metro.entry_outcome(c.enabled, c.card_type, c.balance, c.expires, 250,"
        "                            c.notify = 1, now())"
        " FROM metro.cards c").fetchone()[0]
    [output] = plan[0]["Plan"]["Output"]
    assert "entry_outcome" not in output
    assert output.startswith("CASE WHEN (enabled IS NULL) THEN ")
    assert output.count("CASE") == 1

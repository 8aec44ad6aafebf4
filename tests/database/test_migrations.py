"""The upgrade path: frozen revisions replayed from an empty database give the catalog of
a fresh install of the tree; every revision keeps the rows of the one before; a 0004
database as the last checkout before 0005 installed it reaches the same catalog."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic import command
from commands import metro
from factories import at, catch_up
from psycopg import sql
from test_history import STATION_TOTALS, STATION_TOTALS_RECOMPUTED
from test_install import schema_dump

from metro import config, schema

INSTALLED_0004 = Path(__file__).parents[1] / "schema_0004_installed_at_1486912.sql"

# Rows that must survive every upgrade: table -> columns present at every revision
# that has the table, in a stable order.
KEPT: dict[str, str] = {
    "settings": "fraud_window, fraud_station_limit, fraud_entry_limit, max_wait",
    "stations": "station_id, name, fare, weight",
    "trains": "train_id, name",
    "cards": "card_id, enabled, card_type, balance, expires, name, phone, email, notify",
    "card_events": "event_id, card_id, ts, station_id, activity_code, amount, accept",
    "train_events": "train_id, station_id, activity_type, ts",
    "station_departures": "station_id, train_id, ts, riders, wait_seconds",
    "card_history_second": "card_id, second_start, swipes",
    "station_second_stats": "station_id, second_start, swipes, entries, accepted, rejected,"
                            " fraud, revenue",
    "fraud": "position, txid, trans_id, card_id, ts, station_id, activity_code, amount",
    "card_alert_export": "position, txid, card_id, ts, station_name, name, phone, email,"
                         " notify, alert_message",
    "trips": "position, txid, trip_id, card_id, entry_station, entry_ts, exit_station, exit_ts",
    "bridge_settings": "notify",
    "bridge_cursors": "stream, txid, position, delivered, acked_at",
    "bridge_acks": "stream, txid, position, acked_at",
    "bridge_state": "holder, since, heartbeat_at, last_error, last_error_at",
    "bridge_inbound_offsets": "topic, kafka_partition, next_offset, applied, dead_lettered,"
                              " updated_at",
    "bridge_dead_letters": "id, topic, kafka_partition, kafka_offset, key, value, reason,"
                           " received_at",
    # account_id: bigint before 0006, text since; kept as the same digits.
    "risk_tags": "account_id::text, risk_level",
    "risk_rules": "rule, rule_order, amount_range, min_risk_level, action, reason",
    "risk_decisions": "transaction_id, account_id::text, amount, ts, risk_level, blocked, rule,"
                      " message, decided_at",
    "transaction_decisions": "position, txid, transaction_id, account_id::text, amount, ts,"
                             " risk_level, blocked, rule, message",
}

# What a fresh install holds besides the catalog: the registries and the default rows.
REFERENCE = {
    "streams": "stream, topic, key_column, time_column",
    "error_codes": "sqlstate, name, meaning, row_level",
    "settings": "singleton, fraud_window, fraud_station_limit, fraud_entry_limit, max_wait",
    "bridge_settings": "singleton, notify",
    "bridge_cursors": "stream, txid, position, delivered, acked_at",
    "bridge_state": "singleton, holder, since, heartbeat_at, last_error, last_error_at",
    "risk_rules": "rule, rule_order, amount_range, min_risk_level, action, reason",
}


def rows(conn: psycopg.Connection, tables: dict[str, str]) -> dict[str, list[tuple[Any, ...]]]:
    """The rows of every table in tables that exists in conn's schema, sorted."""
    result = {}
    for table, columns in tables.items():
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"metro.{table}",))
        if exists.fetchone() != (True,):
            continue
        query = sql.SQL("SELECT {} FROM metro.{} ORDER BY {}").format(
            sql.SQL(columns), sql.Identifier(table),
            sql.SQL(", ").join(sql.Literal(i) for i in range(1, columns.count(",") + 2)))
        result[table] = [tuple(r) for r in conn.execute(query)]
    return result


def write_0001(conn: psycopg.Connection) -> None:
    """Rows a 0001 database has: stations, trains, cards and what the functions wrote."""
    conn.execute("INSERT INTO metro.stations VALUES (1, 'Airport', 250, 3), (2, 'Harbor', 300, 1)")
    conn.execute("INSERT INTO metro.trains VALUES (1, 'Blue 1')")
    conn.execute("INSERT INTO metro.cards (card_id, balance, name, phone, notify)"
                 " VALUES (42, 1250, 'Ada', '555-0142', 1), (43, 100, 'Bob', '555-0143', 2)")
    for call, args in (("validate_entry", (42, 1, at())), ("validate_entry", (43, 2, at())),
                       ("validate_entry", (42, 2, at(0.5))),
                       ("process_exit", (42, 2, at(minutes=20))),
                       ("record_train_event", (1, 1, 0, at(minutes=1))),
                       ("record_train_event", (1, 1, 1, at(minutes=2)))):
        placeholders = sql.SQL(", ").join([sql.Placeholder()] * len(args))
        conn.execute(sql.SQL("SELECT metro.{}({})").format(sql.Identifier(call), placeholders),
                     args)


def write_0002(conn: psycopg.Connection) -> None:
    """A recharge works at 0002 (it did not when revisions re-applied today's files), and
    the bridge's tables get rows: an acknowledged fraud row, an inbound offset, a dead
    letter."""
    assert conn.execute("SELECT * FROM metro.recharge_card(42, 2000, 1, %s)",
                        (at(minutes=30),)).fetchone() == (True, "Recharged: 20.00, Balance: 30.00")
    assert conn.execute("SELECT metro.bridge_ack('fraud', txid, position, 1) FROM metro.fraud"
                        ).fetchall() == [(True,)]
    conn.execute("INSERT INTO metro.bridge_inbound_offsets (topic, kafka_partition, next_offset,"
                 " applied, dead_lettered) VALUES ('RECHARGE', 0, 12, 11, 1)")
    conn.execute("INSERT INTO metro.bridge_dead_letters (topic, kafka_partition, kafka_offset,"
                 " key, value, reason) VALUES ('RECHARGE', 0, 4, NULL, 'x,y', 'not a number')")
    conn.execute("UPDATE metro.bridge_state SET holder = 'host:1', last_error = 'Kafka down'")


def write_0003(conn: psycopg.Connection) -> None:
    conn.execute("INSERT INTO metro.risk_tags VALUES (7, 3), (42, 1)")
    assert conn.execute("SELECT * FROM metro.evaluate_transaction('p-1', 7, 10000.01, %s)",
                        (at(),)).fetchone()[0] is True  # type: ignore[index]


def write_0004(conn: psycopg.Connection) -> None:
    assert conn.execute(
        "SELECT blocked FROM metro.evaluate_transactions(ARRAY['p-2', 'p-3'], ARRAY[7, 8],"
        " ARRAY[1.00, 6000.00], ARRAY[%s, %s]::timestamptz[]) ORDER BY ordinal",
        (at(1), at(2))).fetchall() == [(False,), (False,)]


WRITES = {"0001": write_0001, "0002": write_0002, "0003": write_0003, "0004": write_0004}


def works_at_head(conn: psycopg.Connection) -> None:
    """The upgraded database decides swipes, recharges and payments with the rows it kept."""
    later = at(minutes=120)
    assert conn.execute("SELECT * FROM metro.validate_entry(42, 1, %s)", (later,)).fetchone() == (
        True, "Remaining Balance: 27.50")
    assert conn.execute("SELECT * FROM metro.evaluate_transaction('p-1', '7', 10000.01)"
                        ).fetchone()[0] is True  # type: ignore[index]
    lag = conn.execute("SELECT stream, topic, delivered, pending FROM metro.bridge_lag()"
                       " ORDER BY stream").fetchall()
    assert lag == [("card_alert_export", "CARD_ALERT_EXPORT", 0, 2), ("fraud", "FRAUD", 1, 0),
                   ("transaction_decisions", "transaction_decisions", 0, 3),
                   ("trips", "TRIPS", 0, 1)]


def reference(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(dsn) as conn:
        return rows(conn, REFERENCE)


def test_fresh_install_and_replayed_revisions_build_the_same_schema(empty_db):
    installed, replayed = empty_db("installed"), empty_db("replayed")
    assert schema.install(installed) == schema.head_revision()
    schema.upgrade(replayed)
    dump = schema_dump(installed)
    assert "CREATE TABLE metro.streams" in dump
    assert schema_dump(replayed) == dump
    assert reference(replayed) == reference(installed)
    with psycopg.connect(replayed) as conn:
        assert schema.current_revision(conn) == schema.head_revision()


def test_install_applies_the_tree_to_an_empty_database_without_replaying(empty_db, monkeypatch):
    dsn = empty_db("tree_only")
    replayed = []
    monkeypatch.setattr(schema, "upgrade", lambda *args: replayed.append(args))
    assert schema.install(dsn) == schema.head_revision()
    assert replayed == []
    assert schema.install(dsn) == schema.head_revision()
    assert len(replayed) == 1  # the second install finds the schema and asks alembic


def test_every_revision_keeps_the_rows_of_the_one_before(empty_db):
    dsn = empty_db("stepwise")
    kept: dict[str, list[tuple[Any, ...]]] = {}
    for revision in ("0001", "0002", "0003", "0004", "0005", schema.head_revision()):
        schema.upgrade(dsn, revision)
        with psycopg.connect(dsn, autocommit=True) as conn:
            now = rows(conn, KEPT)
            # Every row kept (a revision may add rows: a new stream's cursor).
            assert {table: [r for r in now[table] if r in kept[table]] for table in kept} == kept, \
                revision
            if revision in WRITES:
                WRITES[revision](conn)
            kept = rows(conn, KEPT)
    assert len(kept["card_events"]) == 5 and len(kept["transaction_decisions"]) == 3
    with psycopg.connect(dsn, autocommit=True) as conn:
        works_at_head(conn)


def test_a_0004_database_installed_by_the_last_checkout_upgrades_to_the_fresh_schema(empty_db):
    dsn, fresh = empty_db("main_0004"), empty_db("fresh")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(INSTALLED_0004.read_text())
        conn.execute("RESET search_path")
        for write in WRITES.values():
            write(conn)
        before = rows(conn, KEPT)
    command.stamp(schema.alembic_config(dsn), "0004")
    assert schema.install(dsn) == schema.head_revision()
    schema.install(fresh)
    assert schema_dump(dsn) == schema_dump(fresh)
    registries = {table: REFERENCE[table] for table in ("streams", "error_codes")}
    with psycopg.connect(fresh) as conn:
        assert rows(conn, registries)["streams"]
        fresh_registries = rows(conn, registries)
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert rows(conn, KEPT) == before
        assert rows(conn, registries) == fresh_registries
        works_at_head(conn)


def test_revisions_apply_their_own_frozen_sql():
    """Each revision file reads the SQL file beside it and no file of the tree."""
    versions = config.MIGRATIONS_DIR / "versions"
    scripts = sorted(versions.glob("[0-9][0-9][0-9][0-9]_*.py"))
    assert [p.stem[:4] for p in scripts] == [f"{n:04}" for n in range(1, len(scripts) + 1)]
    for script in scripts:
        assert script.with_suffix(".sql").is_file()
        text = script.read_text()
        assert 'run_revision_sql(Path(__file__).with_suffix(".sql"))' in text
        assert "SQL_DIR" not in text and "PROCEDURES_DIR" not in text


def test_history_survives_as_a_recomputation(empty_db):
    """After the upgrade the per-second history still equals card_events recomputed."""
    dsn = empty_db("history")
    schema.upgrade(dsn, "0001")
    with psycopg.connect(dsn, autocommit=True) as conn:
        write_0001(conn)
    schema.upgrade(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT metro.validate_entry(43, 1, %s)", (at() + timedelta(hours=3),))
        catch_up(conn)
        assert conn.execute(
            "SELECT card_id, second_start, swipes FROM metro.card_history_second ORDER BY 1, 2"
        ).fetchall() == conn.execute(
            "SELECT card_id, date_trunc('second', ts), count(*)::integer FROM metro.card_events"
            " GROUP BY 1, 2 ORDER BY 1, 2").fetchall()


def test_station_totals_start_from_the_retained_history(empty_db):
    """Revision 0014 fills the lifetime counters from the history rolled up before it."""
    dsn = empty_db("totals")
    schema.upgrade(dsn, "0001")
    with psycopg.connect(dsn, autocommit=True) as conn:
        write_0001(conn)
    schema.upgrade(dsn, "0013")
    with psycopg.connect(dsn, autocommit=True) as conn:
        catch_up(conn)
        rolled_up = conn.execute("SELECT sum(swipes) FROM metro.station_second_slots").fetchone()
    assert rolled_up is not None and rolled_up[0] > 0
    schema.upgrade(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET search_path = metro, public")
        assert conn.execute(STATION_TOTALS).fetchall() == conn.execute(
            STATION_TOTALS_RECOMPUTED).fetchall()
        conn.execute("SELECT validate_entry(43, 1, %s)", (at() + timedelta(hours=3),))
        catch_up(conn)
        assert conn.execute(STATION_TOTALS).fetchall() == conn.execute(
            STATION_TOTALS_RECOMPUTED).fetchall()


def test_payment_totals_count_the_pruned_decisions_and_the_rollup_the_rest(empty_db):
    """Revision 0015 counts the decisions whose stream rows the bridge pruned; the rollup
    counts the others once, from the stream."""
    dsn = empty_db("payments")
    for revision, write in WRITES.items():
        schema.upgrade(dsn, revision)
        with psycopg.connect(dsn, autocommit=True) as conn:
            write(conn)
    schema.upgrade(dsn, "0014")
    with psycopg.connect(dsn, autocommit=True) as conn:
        # Delivered and pruned: the first decision (p-1, blocked).
        conn.execute("SELECT metro.bridge_ack('transaction_decisions', txid, position, 1)"
                     " FROM metro.transaction_decisions WHERE transaction_id = 'p-1'")
        conn.execute("SELECT metro.bridge_prune('0 seconds', 1000)")
        assert conn.execute("SELECT transaction_id FROM metro.transaction_decisions"
                            " ORDER BY 1").fetchall() == [("p-2",), ("p-3",)]
    schema.upgrade(dsn)
    totals = "SELECT blocked, payments FROM metro.payment_totals ORDER BY 1"
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute(totals).fetchall() == [(True, 1)]
        catch_up(conn)
        assert conn.execute(totals).fetchall() == [(False, 2), (True, 1)]
        conn.execute("SELECT metro.evaluate_transaction('p-4', '8', 2.00, %s)", (at(3),))
        catch_up(conn)
        assert conn.execute(totals).fetchall() == [(False, 3), (True, 1)]
        assert conn.execute(totals).fetchall() == conn.execute(
            "SELECT blocked, count(*) FROM metro.risk_decisions GROUP BY 1 ORDER BY 1").fetchall()


def upgrade_stops_over(dsn: str, revision: str, bad_rows: str, stopped: str,
                       corrected: str) -> None:
    """From revision, with bad_rows written, metro install stops with the one line stopped
    (exit 2) and leaves the database at revision; once corrected, it upgrades."""
    schema.upgrade(dsn, revision)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(bad_rows)
    done = metro(dsn, "install")
    assert (done.returncode, done.stdout, done.stderr) == (2, "", stopped)
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT version_num FROM metro.alembic_version").fetchone() == (
            revision,)
        conn.execute(corrected)
    assert metro(dsn, "install").returncode == 0


def test_an_upgrade_over_risk_tags_no_payment_can_carry_stops_and_names_them(empty_db):
    """Revision 0018 refuses padded account ids; tags already padded stop the upgrade,
    shown with their padding, and nothing of it is applied until they are corrected."""
    dsn = empty_db("padded_tags")
    upgrade_stops_over(
        dsn, "0017",
        "INSERT INTO metro.risk_tags VALUES (' acct-hi', 3), ('acct-lo', 1),"
        " ('acct-x' || chr(8203), 2), ('', 1), ('acct-' || chr(917536), 1)",
        "metro: risk_tags holds 4 account_id(s) no payment can carry (empty, over 200"
        " characters, or starting or ending with whitespace or an invisible character): '',"
        " ' acct-hi', 'acct-x\\u200b', 'acct-\\U000e0020'. Correct them (UPDATE"
        " metro.risk_tags SET account_id = ...) or delete them, then run metro install"
        " again.\n",
        "UPDATE metro.risk_tags SET account_id = 'acct-hi' WHERE account_id = ' acct-hi';"
        " DELETE FROM metro.risk_tags WHERE account_id IN"
        " ('', 'acct-x' || chr(8203), 'acct-' || chr(917536))")
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT account_id, risk_level FROM metro.risk_tags ORDER BY 1"
                            ).fetchall() == [("acct-hi", 3), ("acct-lo", 1)]
        assert conn.execute("SELECT (evaluate_transaction('p-1', 'acct-hi', 20000, now())).blocked"
                            ).fetchone() == (True,)


def test_an_upgrade_over_negative_card_ids_stops_and_names_them(empty_db):
    """Revision 0020 refuses a negative card_id, as stations and trains refuse theirs;
    cards already so numbered stop the upgrade, named, until they are renumbered."""
    dsn = empty_db("negative_cards")
    upgrade_stops_over(
        dsn, "0019",
        "INSERT INTO metro.cards (card_id, balance) SELECT n, 100 FROM generate_series(-12, 1) n",
        "metro: cards holds 12 card(s) with a negative card_id, which no card may have: -12,"
        " -11, -10, -9, -8, -7, -6, -5, -4, -3 and 2 more. Renumber them (UPDATE metro.cards"
        " SET card_id = ...) or delete them, then run metro install again.\n",
        "UPDATE metro.cards SET card_id = 1000 - card_id WHERE card_id < 0")
    with (psycopg.connect(dsn, autocommit=True) as conn,
          pytest.raises(psycopg.errors.CheckViolation)):
        conn.execute("INSERT INTO metro.cards (card_id) VALUES (-1)")
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*), min(card_id) FROM metro.cards").fetchone() == (
            14, 0)


def upgrade_stops_while_held(dsn: str, revision: str, holding: str, stopped: str) -> None:
    """From revision, metro install stops (exit 2, stopped) while a client's transaction
    that ran holding stays open, leaves the database at revision, and upgrades once the
    transaction ends."""
    schema.upgrade(dsn, revision)
    with psycopg.connect(dsn) as client:
        client.execute(holding)
        done = metro(dsn, "install")  # the client's transaction stays open meanwhile
        assert (done.returncode, done.stdout) == (2, "")
        assert done.stderr.startswith(stopped)
        client.commit()
        assert client.execute("SELECT version_num FROM metro.alembic_version").fetchone() == (
            revision,)
        client.commit()  # that read's transaction would hold the upgrade up in turn
    assert metro(dsn, "install").returncode == 0
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT version_num FROM metro.alembic_version").fetchone() == (
            schema.head_revision(),)


def test_the_0018_upgrade_does_not_hold_payments_behind_an_open_transaction(empty_db):
    """Adding risk_tags' CHECK waits for a payment client's open transaction at most 3 s,
    then stops and says why, instead of holding every payment behind it."""
    dsn = empty_db("tags_locked")
    upgrade_stops_while_held(
        dsn, "0017", "SELECT * FROM metro.evaluate_transaction('x-1', 'acct', 1, now())",
        "metro: risk_tags stayed locked for 3 s by another transaction (a payment client"
        " holding its transaction open?), so the upgrade stopped rather than hold every"
        " payment back. SELECT pid, xact_start, query FROM pg_stat_activity WHERE state")
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT transaction_id FROM metro.risk_decisions").fetchall() == [
            ("x-1",)]


def test_the_0020_upgrade_does_not_hold_swipes_behind_an_open_transaction(empty_db):
    """Adding cards' CHECK reads every card under the table's lock: it waits for a
    transaction holding cards at most 3 s, then stops and says why."""
    dsn = empty_db("cards_locked")
    upgrade_stops_while_held(
        dsn, "0019", "SELECT count(*) FROM metro.cards",
        "metro: cards stayed locked for 3 s by another transaction (a client holding its"
        " transaction open?), so the upgrade stopped rather than hold every swipe back."
        " SELECT pid, xact_start, query FROM pg_stat_activity WHERE state")
    with (psycopg.connect(dsn, autocommit=True) as conn,
          pytest.raises(psycopg.errors.CheckViolation)):
        conn.execute("INSERT INTO metro.cards (card_id) VALUES (-1)")


def test_the_0019_upgrade_does_not_hold_swipes_behind_an_open_transaction(empty_db):
    """Dropping card_alert_export's second (card_id, position) index waits for a
    transaction holding the table at most 3 s, then stops and says why."""
    dsn = empty_db("alerts_locked")
    upgrade_stops_while_held(
        dsn, "0018", "SELECT count(*) FROM metro.card_alert_export",
        "metro: card_alert_export stayed locked for 3 s by another transaction (a client"
        " holding its transaction open?), so the upgrade stopped rather than hold every"
        " swipe back. SELECT pid, xact_start, query FROM pg_stat_activity WHERE state")
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid ="
                            " 'metro.card_alert_export'::regclass ORDER BY 1").fetchall() == [
            ("card_alert_export_pkey",), ("card_alert_export_txid_position",)]


def test_the_0021_upgrade_keeps_settings_in_hours_beside_an_open_swipe(empty_db):
    """Revision 0021 rewrites settings' day-long intervals in hours; its trigger takes a
    lock that a swipe client's open transaction does not hold up."""
    dsn = empty_db("settings_hours")
    schema.upgrade(dsn, "0020")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE metro.settings SET fraud_window = '1 day', max_wait = '1 day 1 hour'")
        conn.execute("INSERT INTO metro.stations VALUES (1, 'Harbor Gate', 250, 1)")
    with psycopg.connect(dsn) as client:
        assert client.execute("SELECT * FROM metro.validate_entry(5, 1)").fetchone() == (
            False, "Card Invalid")
        done = metro(dsn, "install")  # the client's transaction stays open meanwhile
        assert done.returncode == 0, done.stderr
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT fraud_window::text, max_clock_skew::text, max_wait::text"
                            " FROM metro.settings").fetchone() == (
            "24:00:00", "00:10:00", "25:00:00")
        assert conn.execute("SELECT count(*) FROM metro.card_events").fetchone() == (1,)


def test_a_database_whose_0019_already_checked_card_ids_upgrades(empty_db):
    """One release carried the card_id CHECK in revision 0019 (later moved to 0020): a
    database stamped 0019 by it already has the constraint, and upgrades to the catalog
    of a fresh install all the same."""
    dsn, fresh = empty_db("early_check"), empty_db("early_check_fresh")
    schema.upgrade(dsn, "0019")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE metro.cards ADD CONSTRAINT cards_card_id_check"
                     " CHECK (card_id >= 0)")
    done = metro(dsn, "install")
    assert done.returncode == 0, done.stderr
    schema.install(fresh)
    assert schema_dump(dsn) == schema_dump(fresh)

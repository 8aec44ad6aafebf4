"""Which database errors reject one row and which stop the load; every failure to reach
or select the database is one line and exit status 2."""

# ruff: noqa: F811 - the fixtures (run, type_errors) come from test_loader

from __future__ import annotations

import psycopg
import pytest
from commands import loader_command
from test_loader import log_entries, rows, run, write  # noqa: F401 - fixtures

from metro.database import with_dbname
from metro.loader.errors import is_row_error

PAYMENTS = ("tx-1,7,10.00\n"
            "\u200b,7,5.00\n"           # MT007: an invisible transaction_id
            "tx-2,7,20.00\n"
            + "z" * 201 + ",7,1.00\n"   # MT007: over 200 characters
            "tx-3,9,20000.00\n"          # blocked: a high-risk account
            "tx-4,7,-1\n"                # MT003
            "tx-5,8,30.00\n")


def test_an_invalid_transaction_id_rejects_its_row_only(run, conn, tmp_path):
    conn.execute("INSERT INTO risk_tags VALUES (9, 3)")
    path = write(tmp_path, "payments.csv", PAYMENTS)
    status, out, err = run("-p", "evaluate_transaction", path)
    assert (status, err) == (1, "")
    assert out.splitlines()[0] == \
        "payments.csv: read 7, loaded 4, invalid 3 (blocked 1, passed 3)"
    assert log_entries(tmp_path, "payments") == [
        "payments.csv line 2: Invalid transaction_id: '\u200b'",
        f"payments.csv line 4: Invalid transaction_id: '{'z' * 40}'",
        "payments.csv line 6: Transaction amount must be positive, below 1,000,000,000,000, "
        "with at most two decimals: -1"]
    assert rows(conn, "SELECT transaction_id, blocked FROM risk_decisions ORDER BY 1") == [
        ("tx-1", False), ("tx-2", False), ("tx-3", True), ("tx-5", False)]


def _error(conn: psycopg.Connection, statement: str) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(statement)
    return caught.value


def test_row_errors_and_load_errors(conn):
    row_level = {
        "MT001": "SELECT * FROM validate_entry(1, 99)",
        # A metro code the loader has never heard of is still about the row.
        "MT099": "DO $$ BEGIN RAISE EXCEPTION 'new' USING ERRCODE = 'MT099'; END $$",
        "22012": "SELECT 1 / 0",
        "22P02": "SELECT 'x'::integer",
        "23514": "INSERT INTO trains VALUES (-1, 'a')",
        "23505": "INSERT INTO trains VALUES (1, 'a'), (1, 'b')",
        "P0001": "DO $$ BEGIN RAISE EXCEPTION 'plain'; END $$",
    }
    for state, statement in row_level.items():
        error = _error(conn, statement)
        assert (error.sqlstate, is_row_error(error)) == (state, True)
    load_level = {
        "42P01": "SELECT * FROM no_such_table",
        "42883": "SELECT no_such_function()",
        "57014": "SET statement_timeout = 1; SELECT pg_sleep(1)",
    }
    for state, statement in load_level.items():
        error = _error(conn, statement)
        assert (error.sqlstate, is_row_error(error)) == (state, False)


def test_whitespace_around_a_field_is_no_part_of_an_argument(run, conn, tmp_path):
    # As in the bridge's CSV messages: a padded account id is the tagged account.
    conn.execute("INSERT INTO risk_tags VALUES ('acct-hi', 3)")
    path = write(tmp_path, "payments.csv", " tx-1 , acct-hi , 20000.00 \n")
    assert run("-p", "evaluate_transaction", path)[:2] == (
        0, "payments.csv: read 1, loaded 1, invalid 0 (blocked 1, passed 0)\n")
    assert rows(conn, "SELECT transaction_id, account_id, blocked FROM risk_decisions") == [
        ("tx-1", "acct-hi", True)]


def test_a_padded_risk_tag_is_refused_not_loaded_as_another_account(run, conn, tmp_path):
    path = write(tmp_path, "risk_tags.csv", "acct-hi , 3\nacct-lo,1\n")
    assert run(path)[:2] == (1, "risk_tags.csv: read 2, loaded 1, invalid 1\n"
                                "risk_tags.csv: invalid rows in log/risk_tags.invalid.csv,"
                                " reasons in log/risk_tags.log\n")
    assert log_entries(tmp_path, "risk_tags") == [
        'risk_tags.csv line 1: new row for relation "risk_tags" violates check constraint'
        ' "risk_tags_account_id_valid": Failing row contains (acct-hi , 3).']
    assert rows(conn, "SELECT account_id FROM risk_tags") == [("acct-lo",)]


def test_the_database_s_error_codes_decide_when_it_has_them(run, conn, tmp_path):
    # metro.error_codes(sqlstate, name, meaning, row_level): the database's word on its
    # codes wins; here it says MT007 stops a load.
    conn.execute("""CREATE TABLE IF NOT EXISTS metro.error_codes (
                        sqlstate text PRIMARY KEY, name text, meaning text, row_level boolean)""")
    conn.execute("""INSERT INTO metro.error_codes (sqlstate, name, meaning, row_level)
                    VALUES ('MT007', 'invalid_transaction', 'invalid transaction_id', false)
                    ON CONFLICT (sqlstate) DO UPDATE SET row_level = false""")
    path = write(tmp_path, "payments.csv", PAYMENTS)
    status, out, err = run("-p", "evaluate_transaction", path)
    assert (status, out) == (2, "")
    assert err == ("loader: loading metro.evaluate_transaction failed: Invalid transaction_id: "
                   "'\u200b'. A transaction_id is 1 to 200 characters, neither starting nor ending"
                   " with a space, a control or a zero-width character\n")
    assert rows(conn, "SELECT transaction_id FROM risk_decisions") == [("tx-1",)]


@pytest.mark.parametrize("url, says", [
    ("notaurl", "METRO_DATABASE_URL is not a PostgreSQL connection string (missing"),
    ("postgresql://[::1", "METRO_DATABASE_URL is not a PostgreSQL connection string (end"),
    ("postgresql://localhost:1/x", "cannot connect to PostgreSQL: "),
    ("host=/nonexistent/socket/dir dbname=x", "cannot connect to PostgreSQL: ")])
def test_a_database_that_cannot_be_reached_is_one_line(tmp_path, url, says):
    write(tmp_path, "trains.csv", "1,a\n")
    done = loader_command(tmp_path, url, "trains.csv")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith(f"loader: {says}")
    assert len(done.stderr.splitlines()) == 1
    assert not (tmp_path / "log").exists()


def test_a_database_that_does_not_exist_is_one_line(db, tmp_path):
    write(tmp_path, "trains.csv", "1,a\n")
    done = loader_command(tmp_path, with_dbname(db, "metro_no_such_db"), "trains.csv")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith("loader: cannot connect to PostgreSQL: ")
    assert 'database "metro_no_such_db" does not exist' in done.stderr
    assert len(done.stderr.splitlines()) == 1


def test_the_command_loads_and_reports_as_a_user_runs_it(db, tmp_path):
    write(tmp_path, "trains.csv", "1,Aurora\n2,Borealis\n")
    done = loader_command(tmp_path, db, "trains.csv")
    assert (done.returncode, done.stdout, done.stderr) == (
        0, "trains.csv: read 2, loaded 2, invalid 0\n", "")

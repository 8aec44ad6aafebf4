"""Installing: the SQL tree and the alembic revisions give the same schema, install is
idempotent, and the psql walkthrough works against an installed database."""

import re
import subprocess

import psycopg
import pytest
from commands import run_metro
from psycopg import sql
from roles import login_role

from metro import schema
from metro.embedded import EmbeddedServer, bin_dir

# Daily partitions (card_events_p20261102, ...) are made for the days a database holds,
# like its rows: they are compared as data, not as the catalog.
DAILY_PARTITIONS = "metro.*_p" + "[0-9]" * 8


def schema_dump(dsn):
    """pg_dump --schema-only of metro, without the version table, daily partitions and dump
    noise."""
    result = subprocess.run(
        [str(bin_dir() / "pg_dump"), "--schema-only", "--no-owner", "--schema=metro",
         "--exclude-table=metro.alembic_version", f"--exclude-table={DAILY_PARTITIONS}",
         "-d", dsn],
        capture_output=True, text=True, check=True)
    lines = []
    for line in result.stdout.splitlines():
        if line.startswith("--") or not line.strip():
            continue
        if re.match(r"\\(un)?restrict ", line):  # per-dump random key (pg_dump 17.6+)
            continue
        lines.append(line)
    return "\n".join(lines)


def test_tree_and_migrations_build_identical_schemas(empty_db):
    from_tree, from_alembic = empty_db("tree"), empty_db("alembic")
    with psycopg.connect(from_tree) as conn:
        schema.apply_files(conn, schema.sql_tree())
    schema.upgrade(from_alembic)
    tree_dump = schema_dump(from_tree)
    assert "CREATE FUNCTION metro.validate_entry" in tree_dump
    assert schema_dump(from_alembic) == tree_dump


def test_install_twice_changes_nothing(empty_db):
    dsn = empty_db("twice")
    first = run_metro("install", dsn=dsn)
    assert first.returncode == 0, first.stderr
    assert first.stdout == (f"metro schema installed at revision {schema.head_revision()};"
                            " search_path set to metro, public\n")
    dump = schema_dump(dsn)
    second = run_metro("install", dsn=dsn)
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout
    assert schema_dump(dsn) == dump
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM metro.settings").fetchone() == (1,)
        assert conn.execute("SHOW search_path").fetchone() == ("metro, public",)


def test_psql_walkthrough_runs_unqualified(empty_db):
    dsn = empty_db("psql")
    assert run_metro("install", dsn=dsn).returncode == 0
    result = run_metro(
        "psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
        "-c", "INSERT INTO stations VALUES (3, 'Old Mill', 250, 3)",
        "-c", "INSERT INTO cards (card_id, balance) VALUES (42, 1250)",
        "-c", "SELECT * FROM validate_entry(42, 3)",
        "-c", "SELECT * FROM validate_entry(43, 3)",
        "-c", "SELECT card_id, station_id, activity_code, amount, accept FROM card_events",
        dsn=dsn)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "INSERT 0 1", "INSERT 0 1",
        "t|Remaining Balance: 10.00",
        "f|Card Invalid",
        "42|3|1|250|1", "43|3|1|0|0"]


def test_install_reports_an_unreachable_database_in_one_line(tmp_path):
    result = run_metro("install", dsn=f"host={tmp_path} port=1 dbname=nowhere connect_timeout=2")
    assert result.returncode == 2
    assert result.stderr.startswith("metro: ")
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def refused_install_as(dsn: str, role: str) -> str:
    """metro install run as role: refused (exit 2, nothing on stdout); its one line."""
    result = run_metro("install", dsn=psycopg.conninfo.make_conninfo(dsn, user=role))
    assert (result.returncode, result.stdout) == (2, "")
    return result.stderr


def test_install_without_the_privileges_says_which_in_one_line(server_dsn, empty_db):
    dsn = empty_db("unprivileged")
    with login_role(server_dsn, "installer") as role:
        dbname = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
        assert refused_install_as(dsn, role) == (
            f"metro: permission denied for database {dbname}: installing needs CREATE on the"
            " database (a new schema metro), upgrading the ownership of schema metro; run metro"
            " install as the database's owner\n")
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT to_regnamespace('metro')").fetchone() == (None,)
        # Installed by the owner, the schema is not the role's to upgrade.
        schema.install(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
                sql.Identifier(dbname), sql.Identifier(role)))
        stopped = refused_install_as(dsn, role)
    assert stopped.startswith("metro: permission denied for schema metro: installing needs")


def test_an_owner_without_rights_over_the_roles_is_told_so(server_dsn, template_db, empty_db):
    # The database's owner, but the metro roles were created by another role (the
    # template's install created them, whichever test ran first).
    dsn = empty_db("owned")
    dbname = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    with login_role(server_dsn, "owner") as role, psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
            sql.Identifier(dbname), sql.Identifier(role)))
        try:
            stopped = refused_install_as(dsn, role)
            assert conn.execute("SELECT to_regnamespace('metro')").fetchone() == (None,)
        finally:
            # The role is dropped after the test: it may own nothing.
            conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO postgres").format(
                sql.Identifier(dbname)))
    # In PostgreSQL's words, which changed in 16.
    assert stopped.startswith(('metro: permission denied to grant role "metro_',
                               'metro: must have admin option on role "metro_'))
    assert stopped.endswith(
        ": installing creates the roles metro_app, metro_reader, metro_bridge, metro_worker"
        " and metro_replay and grants them to one another, which needs CREATEROLE and ADMIN"
        " OPTION on them (the role that created them has it); run metro install as that"
        " role or as a superuser\n")


def test_an_owner_who_may_not_create_the_roles_is_told_so(tmp_path):
    # A cluster the metro roles were never created in: the first install creates them.
    server = EmbeddedServer(tmp_path / "home")
    server.start()
    try:
        with psycopg.connect(server.conninfo(), autocommit=True) as admin:
            admin.execute("CREATE ROLE owner LOGIN")
            admin.execute("CREATE DATABASE fresh OWNER owner")
        dsn = server.conninfo("fresh")
        assert refused_install_as(dsn, "owner") == (
            "metro: permission denied to create role: installing creates the roles metro_app,"
            " metro_reader, metro_bridge, metro_worker and metro_replay and grants them to one"
            " another, which needs CREATEROLE and ADMIN OPTION on them (the role that created"
            " them has it); run metro install as that role or as a superuser\n")
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert conn.execute("SELECT to_regnamespace('metro'), count(*) FROM pg_roles"
                                " WHERE rolname LIKE 'metro%'").fetchone() == (None, 0)
        with psycopg.connect(server.conninfo(), autocommit=True) as admin:
            admin.execute("ALTER ROLE owner CREATEROLE")
        # With CREATEROLE the owner creates the roles and holds ADMIN OPTION on them.
        installed = run_metro("install", dsn=psycopg.conninfo.make_conninfo(dsn, user="owner"))
        assert installed.returncode == 0, installed.stderr
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert conn.execute("SELECT to_regnamespace('metro')::text, count(*) FROM pg_roles"
                                " WHERE rolname LIKE 'metro%'").fetchone() == ("metro", 5)
    finally:
        server.stop()


@pytest.mark.slow
def test_embedded_server_lifecycle(tmp_path):
    home = tmp_path / "home"
    status = run_metro("db", "status", home=home)
    assert (status.returncode, status.stdout) == (3, f"stopped (data {home / 'pgdata'})\n")
    started = run_metro("db", "start", home=home)
    assert started.returncode == 0, started.stderr
    url = run_metro("db", "url", home=home).stdout.strip()
    assert url == f"postgresql://postgres@/metro?host={home / 'run'}&port=5432"
    try:
        assert run_metro("db", "status", home=home).stdout.startswith(f"running: {url}")
        installed = run_metro("install", home=home)
        assert installed.returncode == 0, installed.stderr
        with psycopg.connect(url) as conn:
            assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
            assert conn.execute("SELECT count(*) FROM metro.settings").fetchone() == (1,)
    finally:
        stopped = run_metro("db", "stop", home=home)
    assert stopped.stdout == "embedded PostgreSQL stopped\n"
    assert run_metro("db", "status", home=home).returncode == 3


def test_db_commands_with_an_external_database(empty_db):
    dsn = empty_db("external")
    assert run_metro("db", "url", dsn=dsn).stdout == f"{dsn}\n"
    status = run_metro("db", "status", dsn=dsn)
    assert (status.returncode, status.stdout) == (
        0, "metro uses an external PostgreSQL (METRO_DATABASE_URL); "
           "db start/stop/status apply only to the embedded server\n")
    assert run_metro("db", "stop", dsn=dsn).returncode == 2


def test_install_creates_the_days_partitions_ahead(empty_db):
    dsn = empty_db("partitions")
    assert run_metro("install", dsn=dsn).returncode == 0
    with psycopg.connect(dsn) as conn:
        days = conn.execute(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'metro.card_events'::regclass"
            " AND inhrelid <> 'metro.card_events_default'::regclass").fetchone()[0]
        ahead = conn.execute("SELECT partitions_ahead FROM metro.settings").fetchone()[0]
        assert days == ahead + 1  # today and the days ahead
        conn.execute("INSERT INTO metro.stations VALUES (1, 'A', 250, 1)")
        conn.execute("INSERT INTO metro.cards (card_id, balance) VALUES (1, 1000)")
        conn.execute("SELECT * FROM metro.validate_entry(1, 1)")
        assert conn.execute("SELECT tableoid::regclass::text FROM metro.card_events"
                            ).fetchone()[0] != "metro.card_events_default"

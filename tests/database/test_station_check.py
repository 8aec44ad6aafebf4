"""card_events' station trigger checks every direct INSERT and COPY, whoever writes, and
stands aside for the schema's functions called by an application, which refuse an
unknown station themselves: a swipe's station is read once."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest
from factories import add_card, at
from psycopg import sql
from psycopg.conninfo import make_conninfo
from roles import login_role

EVENT = ("INSERT INTO metro.card_events (card_id, ts, station_id, activity_code, accept)"
         " VALUES (7, now(), %s, 1, 1)")


@pytest.fixture
def app(server_dsn: str, db: str) -> Iterator[str]:
    """DSN of a login that may only call the functions (at the tests' fixed times)."""
    with login_role(server_dsn, "app", "metro_app") as name:
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("GRANT metro_replay TO {}").format(sql.Identifier(name)))
        yield make_conninfo(db, user=name)


def station_scans(db: str) -> int:
    """Scans of stations counted so far (a backend adds its own when it ends)."""
    with psycopg.connect(db, autocommit=True) as reader:
        return reader.execute("SELECT seq_scan + idx_scan FROM pg_stat_user_tables"
                              " WHERE relid = 'metro.stations'::regclass").fetchone()[0]


def scans_of(db: str, before: int, session: psycopg.Connection, expected: int) -> int:
    """The scans of stations a closed session added, once it has left."""
    pid = session.info.backend_pid
    session.close()
    deadline = time.monotonic() + 30
    with psycopg.connect(db, autocommit=True) as watcher:
        while watcher.execute("SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = %s)",
                              (pid,)).fetchone()[0] or station_scans(db) - before < expected:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
    time.sleep(0.2)
    return station_scans(db) - before


def test_an_applications_swipe_reads_its_station_once_a_direct_insert_is_checked(
        db, conn, stations, app):
    add_card(conn, 42, balance=1000)
    before = station_scans(db)
    client = psycopg.connect(app, autocommit=True)
    for second in (0, 60, 120):
        assert client.execute("SELECT * FROM validate_entry(42, %s, %s)",
                              (1 + second // 60, at(second))).fetchone()[0] is True
    with pytest.raises(psycopg.Error) as raised:
        client.execute("SELECT * FROM validate_entry(42, 99, %s)", (at(180),))
    assert (raised.value.sqlstate, raised.value.diag.message_primary) == (
        "MT001", "Unknown station: 99")
    # One read of the station per call (before revision 0022, the trigger's too: 7).
    assert scans_of(db, before, client, 4) == 4
    assert conn.execute("SELECT count(*) FROM card_events").fetchone() == (3,)

    before = station_scans(db)
    owner = psycopg.connect(db, autocommit=True)
    owner.execute(EVENT, (1,))
    with pytest.raises(psycopg.Error) as raised:
        owner.execute(EVENT, (99,))
    assert (raised.value.sqlstate, raised.value.diag.message_primary) == (
        "MT001", "Unknown station: 99")
    assert scans_of(db, before, owner, 2) == 2
    assert conn.execute("SELECT count(*) FROM card_events").fetchone() == (4,)


@pytest.mark.parametrize("function, args", [
    ("validate_entry(42, 99, %s)", (at(),)),
    ("process_exit(42, 99, %s)", (at(),)),
    ("validate_entries(ARRAY[42, 42], ARRAY[1, 99], ARRAY[%s, %s]::timestamptz[])",
     (at(), at(1))),
    ("recharge_card(42, 500, 99, %s)", (at(),)),
])
def test_every_recording_function_refuses_an_unknown_station_itself(conn, stations, app,
                                                                     function, args):
    add_card(conn, 42, balance=1000)
    with psycopg.connect(app, autocommit=True) as client, pytest.raises(psycopg.Error) as raised:
        client.execute(f"SELECT * FROM {function}", args)
    assert (raised.value.sqlstate, raised.value.diag.message_primary) == (
        "MT001", "Unknown station: 99")
    assert conn.execute("SELECT count(*) FROM card_events").fetchone() == (0,)
    assert conn.execute("SELECT balance FROM cards").fetchone() == (1000,)


# What a role of the operator's needs to load card_events itself (README, Roles).
WRITER_PRIVILEGES = (("USAGE", "SCHEMA metro"), ("SELECT", "metro.stations"),
                     ("INSERT", "metro.card_events"),
                     ("EXECUTE", "FUNCTION metro.writing_txid(),"
                                 " metro.raise_unknown_station(integer)"))


def test_a_role_granted_insert_is_checked_through_set_role(server_dsn, conn, stations):
    # Another session user writing as a role that may not create in schema metro is
    # checked: only the schema's own functions are left out.
    with login_role(server_dsn, "events_writer") as writer:
        role = sql.Identifier(writer)
        for privilege, target in WRITER_PRIVILEGES:
            conn.execute(sql.SQL(f"GRANT {privilege} ON {target} TO {{}}").format(role))
        try:
            conn.execute(sql.SQL("SET ROLE {}").format(role))
            assert conn.execute("SELECT session_user <> current_user").fetchone() == (True,)
            with pytest.raises(psycopg.Error) as raised:
                conn.execute(EVENT, (99,))
            assert (raised.value.sqlstate, raised.value.diag.message_primary) == (
                "MT001", "Unknown station: 99")
            with pytest.raises(psycopg.Error) as raised, conn.cursor().copy(
                    "COPY metro.card_events (card_id, ts, station_id, activity_code, accept)"
                    " FROM STDIN") as copy:
                copy.write_row((8, at(), 98, 1, 1))
            assert raised.value.sqlstate == "MT001"
            conn.execute(EVENT, (2,))
            conn.execute("RESET ROLE")
            assert conn.execute("SELECT card_id, station_id FROM card_events").fetchall() == [
                (7, 2)]
        finally:
            conn.execute("RESET ROLE")
            for privilege, target in WRITER_PRIVILEGES:
                conn.execute(sql.SQL(f"REVOKE {privilege} ON {target} FROM {{}}").format(role))

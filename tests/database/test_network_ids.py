"""Stations and trains are numbered from 0, as in VoltDB's metro example (stations.csv
starts with 0,Airport; its TrainProducer numbers trains from 0); negative ids are refused
and write nothing, a card's too."""

from __future__ import annotations

import psycopg
import pytest
from factories import add_card, at, call, catch_up, counts


def test_station_0_and_train_0_work_like_any_other(conn):
    conn.execute("INSERT INTO stations (station_id, name, fare, weight)"
                 " VALUES (0, 'Airport', 250, 169835), (1, 'Harbor Gate', 250, 6)")
    conn.execute("INSERT INTO trains (train_id, name) VALUES (0, 'Train 0')")
    add_card(conn, 42, balance=1000)
    assert call(conn, "validate_entry", 42, 0, at()) == (True, "Remaining Balance: 7.50")
    assert call(conn, "process_exit", 42, 1, at(minutes=5)) == (True, "Exit recorded")
    conn.execute("SELECT record_train_event(0, 0, 1, %s)", (at(minutes=1),))
    catch_up(conn)
    assert conn.execute("SELECT station_id, train_id, riders FROM station_departures"
                        ).fetchall() == [(0, 0, 1)]
    assert conn.execute("SELECT entry_station, exit_station FROM trips").fetchall() == [(0, 1)]


@pytest.mark.parametrize(("statement", "constraint"), [
    ("INSERT INTO stations (station_id, name) VALUES (-1, 'Nowhere')",
     "stations_station_id_check"),
    ("INSERT INTO trains (train_id, name) VALUES (-1, 'Ghost')", "trains_train_id_check"),
    # Revision 0020: a card loaded as -5 was kept, and its swipes decided.
    ("INSERT INTO cards (card_id, balance) VALUES (-5, 1000)", "cards_card_id_check"),
])
def test_negative_ids_are_refused(conn, statement, constraint):
    before = counts(conn)
    with pytest.raises(psycopg.errors.CheckViolation) as error:
        conn.execute(statement)
    table = constraint.split("_")[0]
    assert error.value.sqlstate == "23514"
    assert error.value.diag.message_primary == (
        f'new row for relation "{table}" violates check constraint "{constraint}"')
    assert counts(conn) == before
    assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)

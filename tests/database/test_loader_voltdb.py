"""VoltDB's metro example files load unchanged: stations (ids from 0), trains, and cards
as its CardsProducer writes them, no header, the table named by the file's stem."""

# ruff: noqa: F811 - the fixtures (run, type_errors) come from test_loader

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from test_loader import rows, run  # noqa: F401 - fixtures

VOLTDB = Path(__file__).resolve().parents[1] / "data" / "voltdb"


def test_voltdb_s_files_load_completely(run, conn):
    # Timestamps without an offset are UTC, whatever the database's TimeZone says.
    database = conn.execute("SELECT current_database()").fetchone()[0]
    conn.execute(f'ALTER DATABASE "{database}" SET TimeZone = \'America/New_York\'')
    files = [str(VOLTDB / name) for name in ("stations.csv", "trains.csv", "cards.csv")]
    status, out, err = run(*files)
    assert (status, err) == (0, "")
    assert out.splitlines() == ["stations.csv: read 12, loaded 12, invalid 0",
                                "trains.csv: read 4, loaded 4, invalid 0",
                                "cards.csv: read 12, loaded 12, invalid 0"]
    assert rows(conn, "SELECT * FROM stations WHERE station_id IN (0, 11) ORDER BY 1") == [
        (0, "Airport", 250, 169835), (11, "Northgate", 350, 9640)]
    assert rows(conn, "SELECT count(*), min(train_id), max(train_id) FROM trains") == [(4, 1, 4)]
    assert rows(conn, "SELECT card_id, enabled, card_type, balance, expires, name, phone, "
                      "email, notify FROM cards WHERE card_id IN (0, 7) ORDER BY 1") == [
        (0, True, 0, 5000, datetime(2027, 3, 14, 10, 22, 31, tzinfo=UTC), "Ines Moreau",
         "6175550100", "imoreau@example.com", 1),
        (7, False, 1, 0, datetime(2025, 11, 15, 9, 15, tzinfo=UTC), "Jon Eriksen",
         "6175550107", "jeriksen@example.com", 2)]
    assert rows(conn, "SELECT count(*), min(card_id), max(card_id) FROM cards") == [(12, 0, 11)]


def test_header_on_a_file_without_one_says_the_first_row_was_skipped(run, conn):
    # VoltDB's files have no header: --header makes their first row one.
    status, out, err = run("--header", str(VOLTDB / "trains.csv"))
    assert (status, err) == (0, "")
    assert out.splitlines() == [
        "trains.csv: read 3, loaded 3, invalid 0",
        "trains.csv: line 1, skipped as the header, looks like data (1,Aurora): if the file"
        " has no header, load it again without --header"]
    assert rows(conn, "SELECT min(train_id) FROM trains") == [(2,)]

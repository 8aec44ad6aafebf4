"""The loader command against a real PostgreSQL: clean files, every kind of bad row, options."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import psycopg
import pytest
from factories import catch_up

from metro import config
from metro.loader import cli, copying


@pytest.fixture
def run(db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    """Runs `loader ARGS` on the test database; returns (exit status, stdout, stderr)."""
    monkeypatch.setenv("METRO_DATABASE_URL", db)
    monkeypatch.chdir(tmp_path)

    def loader(*args: str) -> tuple[int, str, str]:
        status = cli.main(list(args))
        out, err = capsys.readouterr()
        return status, out, err
    return loader


def write(tmp_path: Path, name: str, content: str | bytes) -> str:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return str(path)


def rows(conn: psycopg.Connection, query: str) -> list[tuple]:
    return conn.execute(query).fetchall()


def log_entries(tmp_path: Path, stem: str) -> list[str]:
    """The `line N: reason` lines of a report log."""
    text = (tmp_path / "log" / f"{stem}.log").read_text()
    return [line for line in text.splitlines() if re.match(r"\S+ line \d+: ", line)]


# clean files, one per table of DESIGN.md


def test_loads_the_project_data(run, conn):
    status, out, err = run("--header", str(config.DATA_DIR / "stations.csv"),
                           str(config.DATA_DIR / "trains.csv"))
    assert (status, err) == (0, "")
    assert out.splitlines() == ["stations.csv: read 15, loaded 15, invalid 0",
                                "trains.csv: read 8, loaded 8, invalid 0"]
    assert rows(conn, "SELECT * FROM stations WHERE station_id = 15") == [(15, "Airfield", 350, 6)]
    assert rows(conn, "SELECT count(*) FROM trains") == [(8,)]


def test_loads_cards_in_the_card_csv_format(run, conn, tmp_path):
    path = write(tmp_path, "cards.csv",
                 "1,1,0,2500,,Ann Lee,555-0101,ann@example.com,1\n"
                 "2,0,1,0,2030-01-31 12:00:00+00,\"Smith, Bob\",,,2\n"
                 "3,1,0,0,,,,,0\n")
    assert run(path)[:2] == (0, "cards.csv: read 3, loaded 3, invalid 0\n")
    assert rows(conn, "SELECT card_id, enabled, card_type, balance, expires::text, name, phone, "
                      "email, notify FROM cards ORDER BY card_id") == [
        (1, True, 0, 2500, None, "Ann Lee", "555-0101", "ann@example.com", 1),
        (2, False, 1, 0, "2030-01-31 12:00:00+00", "Smith, Bob", None, None, 2),
        (3, True, 0, 0, None, None, None, None, 0)]


def test_loads_events_skipping_the_generated_event_id(run, conn, stations, tmp_path):
    events = write(tmp_path, "card_events.csv",
                   "7,2025-03-01 08:00:00+00,3,1,250,1\n7,2025-03-01 08:30:00+00,5,-1,0,1\n")
    trains = write(tmp_path, "train_events.csv", "1,3,0,2025-03-01 08:00:00+00\n"
                                                  "1,3,1,2025-03-01 08:01:00+00\n")
    status, out, _ = run(events, trains)
    assert status == 0
    assert out.splitlines() == ["card_events.csv: read 2, loaded 2, invalid 0",
                                "train_events.csv: read 2, loaded 2, invalid 0"]
    assert rows(conn, "SELECT event_id, card_id, station_id, activity_code, amount, accept "
                      "FROM card_events ORDER BY event_id") == [(1, 7, 3, 1, 250, 1),
                                                                (2, 7, 5, -1, 0, 1)]
    # The rollup counts COPY like any other writer.
    catch_up(conn)
    assert rows(conn, "SELECT count(*), sum(swipes) FROM card_history_second") == [(2, 2)]
    assert rows(conn, "SELECT train_id, station_id, activity_type FROM train_events "
                      "ORDER BY ts") == [(1, 3, 0), (1, 3, 1)]


# bad rows


BAD_CARDS = (
    b"card_id,enabled,card_type,balance,expires,name,phone,email,notify\n"  # 1 header
    b"1,1,0,100,,Ann,,,0\n"                                  # 2 good
    b"2,1,0,100,,Bob\n"                                      # 3 wrong column count
    b"3,1,0,lots,,Cid,,,0\n"                                 # 4 text in a number column
    b"\n"                                                    # 5 blank
    b"4,1,1,0,2025-02-30 10:00,Dee,,,0\n"                    # 6 bad timestamp
    b"1,1,0,100,,Ann again,,,0\n"                            # 7 duplicate key
    b"5,1,0,100,,Eve,,,7\n"                                  # 8 CHECK violation
    b"6,1,0,100,,\"Fay, \"\"the\"\" first\",,,0\n"           # 9 good, quoted delimiter
    b"7,1,0,100,,Gus\xff,,,0\n"                              # 10 invalid UTF-8
    b"8,1,0,100,,\"Hal\nHalvorsen\",,,0\n"                   # 11-12 good, multi-line field
    b"\r\n"                                                  # 13 blank
    b"9,1,0,100,,\"Ida,,,0\n"                                # 14 unterminated quote
    b"10,1,0,100,,Jo,,,0\n"                                  # 15 good
)


def test_an_event_at_an_unknown_station_is_set_aside_with_its_line(run, conn, stations,
                                                                    tmp_path):
    # The station check names no line (it runs once per COPY): the loader narrows the
    # failed attempt down to the row.
    path = write(tmp_path, "card_events.csv", "".join(
        f"{card},2025-03-01 08:00:00+00,{99 if card == 7 else 3},1,250,1\n"
        for card in range(1, 11)))
    status, out, _ = run(path)
    assert status == 1
    assert out.splitlines()[0] == "card_events.csv: read 10, loaded 9, invalid 1"
    assert log_entries(tmp_path, "card_events") == [
        "card_events.csv line 7: Unknown station: 99: No row in metro.stations has station_id 99."]
    assert rows(conn, "SELECT count(*), min(station_id), max(station_id) FROM card_events") == [
        (9, 3, 3)]


def test_every_kind_of_bad_row_is_reported_and_the_good_rows_load(run, conn, tmp_path):
    path = write(tmp_path, "cards.csv", BAD_CARDS)
    status, out, err = run("--header", path)
    assert (status, err) == (1, "")
    assert out.splitlines() == [
        "cards.csv: read 11, loaded 4, invalid 7",
        "cards.csv: 1 record spans several lines, the first lines 11 to 12: a quoted field"
        ' holding a line break, or a stray " in an unquoted field',
        "cards.csv: 2 blank lines skipped",
        "cards.csv: invalid rows in log/cards.invalid.csv, reasons in log/cards.log"]
    assert rows(conn, "SELECT card_id, name FROM cards ORDER BY card_id") == [
        (1, "Ann"), (6, 'Fay, "the" first'), (8, "Hal\nHalvorsen"), (10, "Jo")]
    entries = log_entries(tmp_path, "cards")
    # notify 7 breaks a CHECK on the column or on its domain, whichever the schema uses.
    assert entries.pop(4).startswith("cards.csv line 8: ")
    assert entries == [
        'cards.csv line 3: missing data for column "phone"',
        'cards.csv line 4: invalid input syntax for type integer: "lots" (column balance)',
        'cards.csv line 6: date/time field value out of range: "2025-02-30 10:00" (column expires)',
        'cards.csv line 7: duplicate key value violates unique constraint "cards_pkey": '
        "Key (card_id)=(1) already exists.",
        'cards.csv line 10: invalid byte sequence for encoding "UTF8": 0xff',
        "cards.csv line 14: unterminated CSV quoted field"]
    assert "violates check constraint" in (tmp_path / "log" / "cards.log").read_text()
    # The invalid rows exactly as read, without the header: fix them and reload.
    lines = BAD_CARDS.splitlines(keepends=True)
    assert (tmp_path / "log" / "cards.invalid.csv").read_bytes() == b"".join(
        lines[i - 1] for i in (3, 4, 6, 7, 8, 10, 14))
    log = (tmp_path / "log" / "cards.log").read_text()
    assert "    7,1,0,100,,Gus\\xff,,,0\n" in log
    assert (tmp_path / "log" / "cards.summary").read_text().splitlines() == out.splitlines()


def test_a_foreign_key_violation_is_found_without_a_line_number(run, conn, stations, tmp_path):
    lines = [f"{1 + n % 8},{1 + n % 15},{n % 2},2025-03-01 08:{n:02d}:00+00\n" for n in range(40)]
    lines[25] = "99,3,1,2025-03-01 08:25:00+00\n"
    path = write(tmp_path, "train_events.csv", "".join(lines))
    status, out, _ = run(path)
    assert status == 1
    assert out.splitlines()[0] == "train_events.csv: read 40, loaded 39, invalid 1"
    assert log_entries(tmp_path, "train_events") == [
        'train_events.csv line 26: insert or update on table "train_events" violates foreign '
        'key constraint "train_events_train_id_fkey": Key (train_id)=(99) is not present in '
        'table "trains".']
    assert rows(conn, "SELECT count(*) FROM train_events") == [(39,)]


@pytest.fixture(params=["on_error", "savepoints"])
def type_errors(request, monkeypatch) -> str:
    """Both ways to find rows with a value of the wrong type: COPY ON_ERROR ignore
    (PostgreSQL 17+) and the savepoint path every version takes."""
    if request.param == "savepoints":
        monkeypatch.setattr(copying, "ON_ERROR_FROM", 10**9)
    return request.param


def test_scattered_bad_rows_across_batches_are_all_found_in_file_order(run, conn, tmp_path,
                                                                       type_errors,
                                                                       monkeypatch):
    if type_errors == "on_error" and conn.info.server_version < copying.ON_ERROR_FROM:
        pytest.skip("COPY ON_ERROR needs PostgreSQL 17 or later")
    # Every COPY statement the loader sends, recorded on its way to the server: they prove
    # which path ran.
    sent: list[bytes] = []
    real_copy = psycopg.Cursor.copy

    def recording_copy(cursor, statement, *args, **kwargs):
        sent.append(statement if isinstance(statement, bytes) else statement.as_bytes(cursor))
        return real_copy(cursor, statement, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "copy", recording_copy)
    bad = set(range(7, 3000, 97)) | {1500, 1501, 1502, 2999}
    kinds = ["x", "-1", "", "1,2"]  # wrong type, CHECK, NOT NULL, extra column
    lines = [f"{card},1,0,{kinds[card % 4] if card in bad else 100},,,,,0\n"
             for card in range(3000)]
    path = write(tmp_path, "cards.csv", "".join(lines))
    status, out, _ = run("--batch", "700", "--max-errors", "-1", path)
    assert status == 1
    assert out.splitlines()[0] == f"cards.csv: read 3000, loaded {3000 - len(bad)}, " \
                                  f"invalid {len(bad)}"
    entries = log_entries(tmp_path, "cards")
    assert [int(entry.split()[2].rstrip(":")) for entry in entries] == \
        [card + 1 for card in sorted(bad)]
    assert entries[:2] == [
        "cards.csv line 8: extra data after last expected column",
        'cards.csv line 105: invalid input syntax for type integer: "x" (column balance)']
    # A negative balance breaks a CHECK on the column or on its domain.
    assert entries[2].startswith("cards.csv line 202: ")
    assert "violates check constraint" in entries[2]
    assert entries[3] == (
        'cards.csv line 299: null value in column "balance" of relation "cards" violates '
        'not-null constraint: Failing row contains (298, t, 0, null, null, null, null, null, 0).')
    assert rows(conn, "SELECT count(*) FROM cards WHERE balance = 100") == [(3000 - len(bad),)]
    with_on_error = [b"ON_ERROR ignore" in statement for statement in sent]
    if type_errors == "on_error":
        assert sent and all(with_on_error)
    else:
        assert sent and not any(with_on_error)


def test_a_first_line_header_gets_a_hint(run, tmp_path):
    status, out, _ = run(str(config.DATA_DIR / "trains.csv"))
    assert status == 1
    assert out.splitlines()[-1] == "trains.csv: line 1 looks like a header: skip it with --header"
    # Not for a wrong delimiter (every row refused) nor for a data row's typo.
    wrong = write(tmp_path, "stations.csv", "1;Airport;250;1\n2;Harbor;250;1\n")
    assert run(wrong)[1].splitlines()[-1] == \
        "stations.csv: invalid rows in log/stations.invalid.csv, reasons in log/stations.log"
    typo = write(tmp_path, "trains.csv", "1x,Aurora\n2,Borealis\n")
    assert "looks like a header" not in run(typo)[1]
    # A header alone: nothing else to load.
    alone = write(tmp_path, "trains.csv", "id,name\n")
    assert run(alone)[1].splitlines()[-1] == \
        "trains.csv: line 1 looks like a header: skip it with --header"


# options


def test_max_errors_stops_at_the_limit_and_keeps_what_was_loaded(run, conn, tmp_path,
                                                                 type_errors):
    lines = [f"{card},1,0,{'x' if card % 10 == 5 else 100},,,,,0\n" for card in range(100)]
    path = write(tmp_path, "cards.csv", "".join(lines))
    status, out, _ = run("--max-errors", "3", path)
    assert status == 1
    assert out.splitlines()[:2] == [
        "cards.csv: read 26, loaded 23, invalid 3",
        "cards.csv: stopped at line 26 after 3 invalid rows (--max-errors 3); "
        "later lines were not read"]
    assert rows(conn, "SELECT max(card_id), count(*) FROM cards") == [(24, 23)]


def test_a_duplicate_key_is_not_blamed_on_the_column_copy_read_last(run, conn, tmp_path):
    # COPY reads ahead of its inserts: the duplicate on line 1 is found while its context
    # points at line 2's card_type.
    conn.execute("INSERT INTO cards (card_id, balance) VALUES (1, 100)")
    path = write(tmp_path, "cards.csv", "1,1,0,100,,Ann,,,0\n2,1,zz,100,,Bob,,,0\n")
    assert run(path)[0] == 1
    assert log_entries(tmp_path, "cards") == [
        'cards.csv line 1: duplicate key value violates unique constraint "cards_pkey": '
        "Key (card_id)=(1) already exists.",
        'cards.csv line 2: invalid input syntax for type smallint: "zz" (column card_type)']


def test_truncate_replaces_the_contents_in_one_transaction(run, conn, tmp_path):
    conn.execute("INSERT INTO trains VALUES (1, 'Old 1'), (2, 'Old 2')")
    path = write(tmp_path, "trains.csv", "2,New 2\n3,New 3\n")
    assert run("--truncate", path)[:2] == (0, "trains.csv: read 2, loaded 2, invalid 0\n")
    assert rows(conn, "SELECT * FROM trains ORDER BY 1") == [(2, "New 2"), (3, "New 3")]


def test_a_failed_truncate_load_leaves_the_old_contents(run, conn, tmp_path):
    conn.execute("INSERT INTO trains VALUES (1, 'Old 1')")
    path = write(tmp_path, "trains.csv", "2,New 2\nx,Bad\ny,Bad\n5,New 5\n")
    status, out, err = run("--truncate", "--max-errors", "2", path)
    assert (status, out) == (2, "")
    assert err == ("loader: stopped at line 3 after 2 invalid rows (--max-errors 2); "
                   "rolled back: metro.trains keeps its previous contents\n")
    assert rows(conn, "SELECT * FROM trains") == [(1, "Old 1")]
    assert log_entries(tmp_path, "trains")[1] == \
        'trains.csv line 3: invalid input syntax for type integer: "y" (column train_id)'


def test_a_truncate_load_that_loads_no_row_leaves_the_old_contents(run, conn, tmp_path):
    # An export gone wrong: the wrong delimiter (every row refused), or an empty file.
    conn.execute("INSERT INTO trains VALUES (1, 'Old 1')")
    semicolons = write(tmp_path, "trains.csv", "2;New 2\n3;New 3\n")
    status, out, err = run("--truncate", semicolons)
    assert (status, out) == (2, "")
    assert err == ("loader: no row loaded (2 rows read), so --truncate would leave the table"
                   " empty (TRUNCATE it in SQL if you mean it); rolled back: metro.trains keeps"
                   " its previous contents\n")
    assert len(log_entries(tmp_path, "trains")) == 2
    empty = write(tmp_path, "export.csv", "")
    status, out, err = run("--truncate", "--table", "trains", empty)
    assert (status, out) == (2, "")
    assert err.startswith("loader: no row loaded (0 rows read), so --truncate would leave")
    assert rows(conn, "SELECT * FROM trains") == [(1, "Old 1")]


def test_truncate_keeps_rows_that_other_tables_reference(run, conn, stations, tmp_path):
    conn.execute("INSERT INTO train_events VALUES (1, 3, 0, now())")
    status, out, err = run("--truncate", "--header", str(config.DATA_DIR / "stations.csv"))
    assert (status, out) == (2, "")
    assert err == ('loader: loading metro.stations failed: update or delete on table "stations" '
                   'violates foreign key constraint "train_events_station_id_fkey" on table '
                   '"train_events": Key (station_id)=(3) is still referenced from table '
                   '"train_events"; rolled back: metro.stations keeps its previous contents\n')
    assert rows(conn, "SELECT count(*) FROM stations") == [(15,)]


def test_upsert_replaces_rows_with_the_same_key(run, conn, tmp_path):
    conn.execute("INSERT INTO trains VALUES (1, 'Old 1'), (2, 'Old 2')")
    path = write(tmp_path, "trains.csv", "2,New 2\n3,New 3\n3,Newer 3\n-4,Bad\n")
    status, out, _ = run("--upsert", path)
    assert (status, out.splitlines()[0]) == (1, "trains.csv: read 4, loaded 3, invalid 1")
    assert rows(conn, "SELECT * FROM trains ORDER BY 1") == [
        (1, "Old 1"), (2, "New 2"), (3, "Newer 3")]
    assert log_entries(tmp_path, "trains") == [
        'trains.csv line 4: new row for relation "trains" violates check constraint '
        '"trains_train_id_check": Failing row contains (-4, Bad).']


def test_upsert_into_card_events_is_refused_clearly(run, conn, stations, tmp_path):
    path = write(tmp_path, "card_events.csv", "7,2025-03-01 08:00:00+00,3,1,250,1\n")
    status, out, err = run("--upsert", path)
    assert (status, out) == (2, "")
    assert err == ("loader: cannot --upsert into metro.card_events: its primary key (event_id) "
                   "is generated by the database, not read from the file\n")
    assert rows(conn, "SELECT count(*) FROM card_events") == [(0,)]


def test_delimiter_quote_null_and_skip(run, conn, tmp_path):
    path = write(tmp_path, "people.csv",
                 "exported 2025-03-01\ncard_id;enabled;card_type;balance;expires;name;phone;"
                 "email;notify\n1;1;0;100;NULL;'Lee; Ann';;NULL;0\n")
    status, out, _ = run("--table", "cards", "--skip", "1", "--header", "--delimiter", ";",
                         "--quotechar", "'", "--null", "NULL", path)
    assert (status, out) == (0, "people.csv: read 1, loaded 1, invalid 0\n")
    assert rows(conn, "SELECT name, phone, email FROM cards") == [("Lee; Ann", "", None)]


# --procedure


def test_procedure_reports_the_rows_the_function_rejects(run, conn, stations, tmp_path):
    conn.execute("INSERT INTO cards (card_id, balance) VALUES (42, 1000)")
    path = write(tmp_path, "swipes.csv",
                 "42,3,2025-03-01 08:00:00+00\n"      # accepted
                 "43,3,2025-03-01 08:00:01+00\n"      # Card Invalid: a decision, not an error
                 "42,99,2025-03-01 08:10:00+00\n"     # MT001
                 "42,3\n"                             # ts defaults to now()
                 "42\n"                               # too few fields
                 "42,,2025-03-01 08:20:00+00\n")      # NULL station: MT004
    status, out, _ = run("--procedure", "validate_entry", path)
    assert status == 1
    assert out.splitlines()[0] == "swipes.csv: read 6, loaded 3, invalid 3 (accepted 2, refused 1)"
    assert log_entries(tmp_path, "swipes") == [
        "swipes.csv line 3: Unknown station: 99: No row in metro.stations has station_id 99.",
        "swipes.csv line 5: metro.validate_entry takes 2 to 3 arguments, the row has 1 fields",
        "swipes.csv line 6: validate_entry: station_id must not be NULL"]
    assert rows(conn, "SELECT card_id, accept FROM card_events ORDER BY event_id") == [
        (42, 1), (43, 0), (42, 1)]


def test_procedure_timestamps_may_be_epoch_numbers_and_an_empty_one_is_now(run, conn,
                                                                          stations, tmp_path):
    # As the bridge reads them: seconds, milliseconds or microseconds, by magnitude.
    conn.execute("INSERT INTO cards (card_id, balance) VALUES (42, 10000)")
    path = write(tmp_path, "swipes.csv",
                 "42,3,1740816000\n"              # 2025-03-01 08:00:00 UTC, seconds
                 "42,3,1740816060500\n"           # 08:01:00.5, milliseconds
                 "42,3,1740816120000000\n"        # 08:02:00, microseconds
                 "42,3,\n"                         # empty: now(), as if left out
                 "42,3,+1.74081618e9\n"           # 08:03:00, as the bridge reads it
                 "42,3,20250302\n"                 # no epoch: PostgreSQL's date
                 "42,3,12\n")                      # neither, refused by PostgreSQL
    status, out, _ = run("-p", "validate_entry", path)
    assert status == 1
    assert out.splitlines()[0] == "swipes.csv: read 7, loaded 6, invalid 1 (accepted 6, refused 0)"
    assert log_entries(tmp_path, "swipes") == [
        'swipes.csv line 7: invalid input syntax for type timestamp with time zone: "12"']
    assert rows(conn, "SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS')"
                      " FROM card_events WHERE ts < now() - interval '1 minute'"
                      " ORDER BY event_id") == [
        ("2025-03-01 08:00:00.000",), ("2025-03-01 08:01:00.500",), ("2025-03-01 08:02:00.000",),
        ("2025-03-01 08:03:00.000",), ("2025-03-02 00:00:00.000",)]
    assert rows(conn, "SELECT count(*) FROM card_events WHERE ts >= now() - interval '1 minute'"
                ) == [(1,)]


# fatal errors: exit status 2, one line, nothing written


def test_missing_file(run, tmp_path):
    missing = tmp_path / "nope.csv"
    assert run(str(missing)) == (2, "", f"loader: no such file: {missing}\n")


def test_a_directory_or_a_device_is_not_called_missing(run, tmp_path):
    assert run(str(tmp_path)) == (
        2, "", f"loader: {tmp_path} is a directory: name the files in it\n")
    assert run("/dev/null") == (2, "", "loader: not a regular file: /dev/null\n")


@pytest.mark.parametrize("name, content, says", [
    ("stations.csv.gz", gzip.compress(b"1,Airport,250,1\n", mtime=0),
     "is gzip-compressed, not UTF-8 CSV text: decompress it first (gunzip -k)"),
    ("stations.csv", "1,Airport,250,1\n".encode("utf-16"),
     "is UTF-16 text, not UTF-8 CSV text: convert it first (iconv -f UTF-16 -t UTF-8)"),
    ("stations.zip", b"PK\x03\x04rest", "is a zip archive, not UTF-8 CSV text: extract it"
                                         " first (unzip)"),
])
def test_a_file_that_is_not_csv_text_is_named_for_what_it_is(run, conn, tmp_path, name,
                                                              content, says):
    # A gzip's stem (stations.csv) was read as schema "stations", table "csv".
    path = write(tmp_path, name, content)
    assert run(path) == (2, "", f"loader: {path} {says}\n")
    assert rows(conn, "SELECT count(*) FROM stations") == [(0,)]


def test_text_that_only_starts_like_bzip2_is_csv(run, conn, tmp_path):
    path = write(tmp_path, "risk_tags.csv", "BZh-77,2\nacct-9,1\n")
    assert run(path)[:2] == (0, "risk_tags.csv: read 2, loaded 2, invalid 0\n")


def test_latin1_rows_get_a_hint_to_convert_the_file(run, conn, tmp_path):
    path = write(tmp_path, "trains.csv", "1,Aurora\n2,Bor\xe9alis\n".encode("latin-1"))
    status, out, _ = run(path)
    assert status == 1
    assert out.splitlines()[-1] == ("trains.csv: not all of it is UTF-8 text; if it was written in"
                                    " another encoding, convert it first (iconv -f LATIN1 -t"
                                    " UTF-8)")


def test_a_file_given_twice_is_refused_as_such(run, conn, tmp_path):
    path = write(tmp_path, "trains.csv", "1,Aurora\n")
    assert run(path, path) == (2, "", f"loader: {path} is given twice: load it once\n")
    assert rows(conn, "SELECT count(*) FROM trains") == [(0,)]


def test_a_tab_delimiter_may_be_written_as_backslash_t(run, conn, tmp_path):
    path = write(tmp_path, "trains.csv", "1\tAurora\n2\tBorealis\n")
    assert run("--delimiter", "\\t", path)[:2] == (0, "trains.csv: read 2, loaded 2, invalid 0\n")
    assert rows(conn, "SELECT * FROM trains ORDER BY 1") == [(1, "Aurora"), (2, "Borealis")]


def test_two_files_that_would_share_their_reports_are_refused(run, conn, tmp_path):
    # Daily exports in dated folders: the second file's report replaced the first's,
    # and the first file's invalid rows were in no report.
    for day in ("d1", "d2"):
        (tmp_path / day).mkdir()
        write(tmp_path / day, "cards.csv", "1,1,0,100,,Ann,,,0\n")
    first, second = tmp_path / "d1" / "cards.csv", tmp_path / "d2" / "cards.csv"
    assert run(str(first), str(second)) == (
        2, "", f"loader: {first} and {second} would write the same reports (cards.invalid.csv,"
               " cards.log): load them in separate runs, each with its own --reportdir\n")
    assert rows(conn, "SELECT count(*) FROM cards") == [(0,)]


@pytest.mark.parametrize("options, message", [
    (("--quotechar", ","), "--quotechar and --delimiter must differ; both are ','"),
    (("--null", "a,b"), "--null 'a,b' holds the --delimiter ',': a field could not be told"
                        " from a NULL"),
    (("--null", '"'), "--null '\"' holds the --quotechar '\"': a field could not be told"
                      " from a NULL"),
])
def test_options_copy_would_refuse_on_every_row_are_refused_first(run, conn, tmp_path, options,
                                                                   message):
    # Before, every good row was reported invalid, with COPY's complaint as the reason.
    path = write(tmp_path, "trains.csv", "1,Aurora\n")
    assert run(*options, path) == (2, "", f"loader: {message}\n")
    assert rows(conn, "SELECT count(*) FROM trains") == [(0,)]


def test_truncate_of_the_swipes_record_is_refused(run, conn, stations, tmp_path):
    conn.execute("SELECT metro.validate_entry(1, 1)")
    path = write(tmp_path, "card_events.csv", "2,2026-11-02 08:00:00+00,1,1,0,0\n")
    assert run("--truncate", path) == (
        2, "", "loader: --truncate would empty card_events, the record of every swipe, which is"
               " append-only; to start it afresh, TRUNCATE metro.card_events in SQL first\n")
    assert rows(conn, "SELECT card_id FROM card_events") == [(1,)]


def test_unknown_table(run, tmp_path):
    path = write(tmp_path, "buses.csv", "1,a\n")
    assert run(path) == (
        2, "", "loader: unknown table metro.buses (name the target with --table)\n")


def test_unreachable_database(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("METRO_DATABASE_URL", f"host={tmp_path} port=1 user=nobody dbname=x")
    path = write(tmp_path, "trains.csv", "1,a\n")
    assert cli.main([path]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("loader: cannot connect to PostgreSQL: ")
    assert len(err.splitlines()) == 1

"""What a newcomer reads: summaries, report files, hints, help."""

# ruff: noqa: F811 - the fixtures (run, type_errors) come from test_loader

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from test_loader import rows, run, write  # noqa: F401 - fixtures

from metro import config
from metro.loader import cli
from metro.loader.catalog import FUNCTIONS, TABLES


def test_one_blank_line_is_singular(run, tmp_path):
    path = write(tmp_path, "trains.csv", "1,a\n\n2,b\n")
    assert run(path) == (0, "trains.csv: read 2, loaded 2, invalid 0\n"
                            "trains.csv: 1 blank line skipped\n", "")
    path = write(tmp_path, "trains.csv", "3,a\n\n\r\n4,b\n")
    assert run(path)[1].splitlines()[1] == "trains.csv: 2 blank lines skipped"


def test_the_header_is_not_copied_into_the_invalid_rows(run, tmp_path):
    path = write(tmp_path, "stations.csv", "id,name,fare,weight\n1,Central,250,5\n"
                                           "2,Museum,lots,3\n3,Harbor,250,1\n")
    status, out, _ = run("--header", "--skip", "0", path)
    assert status == 1
    assert out.splitlines()[0] == "stations.csv: read 3, loaded 2, invalid 1"
    assert (tmp_path / "log" / "stations.invalid.csv").read_bytes() == b"2,Museum,lots,3\n"


def test_reloading_the_data_files_suggests_upsert_once(run, conn, tmp_path):
    files = [str(config.DATA_DIR / "stations.csv"), str(config.DATA_DIR / "trains.csv")]
    assert run("--header", *files)[0] == 0
    status, out, _ = run("--header", *files)
    assert status == 1
    assert out.splitlines() == [
        "stations.csv: read 15, loaded 0, invalid 15",
        "stations.csv: invalid rows in log/stations.invalid.csv, reasons in log/stations.log",
        "stations.csv: 15 rows have keys already in metro.stations (loaded before, or "
        "earlier in this file): to replace those rows, "
        "load with --upsert",
        "trains.csv: read 8, loaded 0, invalid 8",
        "trains.csv: invalid rows in log/trains.invalid.csv, reasons in log/trains.log",
        "trains.csv: 8 rows have keys already in metro.trains (loaded before, or "
        "earlier in this file): to replace those rows, "
        "load with --upsert"]
    assert run("--header", "--upsert", *files) == (
        0, "stations.csv: read 15, loaded 15, invalid 0\ntrains.csv: read 8, loaded 8, "
           "invalid 0\n", "")
    assert rows(conn, "SELECT count(*) FROM stations") == [(15,)]


def test_one_duplicate_key_is_singular(run, conn, tmp_path):
    conn.execute("INSERT INTO trains VALUES (1, 'Old')")
    path = write(tmp_path, "trains.csv", "1,New\n2,Two\n")
    assert run(path)[1].splitlines()[-1] == (
        "trains.csv: 1 row has a key already in metro.trains (loaded before, or "
        "earlier in this file): to replace those rows, "
        "load with --upsert")


def test_no_upsert_hint_among_other_bad_rows(run, conn, tmp_path):
    conn.execute("INSERT INTO trains VALUES (1, 'Old')")
    path = write(tmp_path, "trains.csv", "1,New\nx,Two\n")
    out = run(path)[1]
    assert "--upsert" not in out


def test_every_option_is_described():
    parser = cli.build_parser()
    for action in parser._actions:
        assert action.help, action.option_strings or action.dest


def test_a_batch_of_zero_rows_is_refused_before_anything_is_read(conn, tmp_path):
    path = write(tmp_path, "stations.csv", "99,Nowhere,250\n")
    script = Path(sys.executable).with_name("loader")
    refused = subprocess.run([str(script), "--batch", "0", str(path)], capture_output=True,
                             text=True, check=False)
    assert refused.returncode == 2
    assert refused.stderr.splitlines()[-1] == (
        "loader: error: argument --batch: must be 1 or more: 0")
    assert conn.execute("SELECT count(*) FROM stations WHERE station_id = 99").fetchone() == (0,)


def test_help_names_the_program_as_typed_and_lists_the_targets(tmp_path):
    script = Path(sys.executable).with_name("loader")
    shown = subprocess.run([str(script), "--help"], capture_output=True, text=True,
                           check=True, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"}).stdout
    assert shown.startswith("usage: loader [-h] [--table NAME | --procedure NAME]")
    assert ("--delimiter C         the character between fields, one byte (default: ,); \\t is a"
            " tab") in shown
    assert ("--quotechar C         the character around a field that holds the delimiter, a "
            'line break or itself (doubled inside); one byte (default: ")') in shown
    assert "one of: " + ", ".join(TABLES) in shown
    assert "one of: " + ", ".join(FUNCTIONS) in shown
    module = subprocess.run([sys.executable, "-m", "metro.loader", "--help"], capture_output=True,
                            text=True, check=True, cwd=tmp_path).stdout
    assert module.startswith("usage: python -m metro.loader [-h]")
    wrong = subprocess.run([str(script), "--delimiter", "ab", "x.csv"], capture_output=True,
                           text=True, check=False)
    assert wrong.returncode == 2
    assert wrong.stderr.splitlines()[-1] == (
        "loader: error: argument --delimiter: --delimiter must be a single one-byte character")

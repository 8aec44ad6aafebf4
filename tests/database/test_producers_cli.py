"""Clear one-line errors from the producers command, and nothing written when it refuses."""

from __future__ import annotations

import pytest

from metro.producers.cli import main


def test_via_accepts_direct_and_kafka(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["trains", "--via", "http"])
    assert exit_info.value.code == 2
    assert ("argument --via: 'http' is not available; supported: direct (call the functions),"
            " kafka (publish to the bridge's inbound topics)" in capsys.readouterr().err)


def test_riders_cannot_go_through_kafka(capsys):
    assert main(["riders", "--via", "kafka"]) == 2
    assert capsys.readouterr().err == (
        "producers: riders cannot go --via kafka: they need each entry's answer to schedule"
        " the exit (use --via direct)\n")


def test_riders_without_cards_say_how_to_get_them(conn, stations, db, monkeypatch, capsys):
    monkeypatch.setenv("METRO_DATABASE_URL", db)
    assert main(["riders", "--rate", "10", "--duration", "1"]) == 2
    assert capsys.readouterr().err == (
        "producers: metro.cards is empty: generate cards with `producers cards --count 100000"
        " --output cards.csv` and load them\n")
    assert conn.execute("SELECT count(*) FROM metro.card_events").fetchone() == (0,)


def test_recharges_without_stations_say_so(conn, db, monkeypatch, capsys):
    conn.execute("INSERT INTO metro.cards (card_id, balance) VALUES (1, 500)")
    monkeypatch.setenv("METRO_DATABASE_URL", db)
    assert main(["recharges", "--duration", "1"]) == 2
    assert capsys.readouterr().err == (
        "producers: metro.stations is empty: load data/stations.csv first"
        " (loader --header data/stations.csv)\n")
    assert conn.execute("SELECT count(*) FROM metro.card_events").fetchone() == (0,)


def test_database_without_the_schema_is_named(server_dsn, monkeypatch, capsys):
    monkeypatch.setenv("METRO_DATABASE_URL", server_dsn)
    assert main(["trains", "--duration", "1"]) == 2
    assert capsys.readouterr().err == (
        "producers: metro tables not found: is the metro schema installed? run: metro install\n")


@pytest.mark.parametrize(("argv", "message"), [
    (["riders", "--rate", "0"], "argument --rate: must be positive: 0"),
    (["riders", "--rate", "abc"], "argument --rate: not a number: 'abc'"),
    (["riders", "--rate", "nan"], "argument --rate: not a finite number: 'nan'"),
    (["payments", "--rate", "inf"], "argument --rate: not a finite number: 'inf'"),
    (["riders", "--fraud-ratio", "1"], "argument --fraud-ratio: must be at least 0 and below 1: 1"),
    (["riders", "--fraud-ratio", "nan"], "argument --fraud-ratio: not a finite number: 'nan'"),
    (["trains", "--duration", "-1"], "argument --duration: must not be negative: -1"),
    (["trains", "--duration", "inf"], "argument --duration: not a finite number: 'inf'"),
    (["recharges", "--mode", "threads"], "argument --mode: invalid choice: 'threads'"),
])
def test_bad_options_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_unreachable_database_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("METRO_DATABASE_URL", f"host={tmp_path} port=1 dbname=metro")
    assert main(["riders", "--duration", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("producers: cannot connect to PostgreSQL: ")
    assert "No such file or directory" in err
    assert err.count("\n") == 1

"""What the loader may write to: metro's public tables and functions only, checked before
anything is loaded or written, with a message that says what exists."""

# ruff: noqa: F811 - the fixtures (run, type_errors) come from test_loader

from __future__ import annotations

from pathlib import Path

from test_loader import rows, run, write  # noqa: F401 - fixtures

from metro.loader.catalog import FUNCTIONS, TABLES

TABLE_LIST = ", ".join(TABLES)
FUNCTION_LIST = ", ".join(FUNCTIONS)


def nothing_written(tmp_path: Path) -> bool:
    return not (tmp_path / "log").exists()


def test_a_system_catalog_is_not_a_target(run, conn, tmp_path):
    # A row that would make a superuser login if it reached pg_authid.
    path = write(tmp_path, "roles.csv", "16999,intruder,t,t,t,t,t,t,t,-1,,\n")
    assert run("--table", "pg_catalog.pg_authid", path) == (
        2, "", "loader: pg_catalog.pg_authid is outside schema metro: "
               f"loader loads into {TABLE_LIST}\n")
    assert rows(conn, "SELECT count(*) FROM pg_roles WHERE rolname = 'intruder'") == [(0,)]
    assert nothing_written(tmp_path)


def test_a_file_stem_outside_metro_is_not_a_target(run, conn, tmp_path):
    path = write(tmp_path, "public.trains.csv", "1,a\n")
    assert run(path) == (2, "", "loader: public.trains is outside schema metro (the file's "
                                "stem; name the target with --table): "
                                f"loader loads into {TABLE_LIST}\n")
    assert nothing_written(tmp_path)


def test_a_function_outside_metro_is_not_called(run, tmp_path):
    path = write(tmp_path, "sleeps.csv", "30\n")
    assert run("-p", "pg_catalog.pg_sleep", path) == (
        2, "", "loader: pg_catalog.pg_sleep is outside schema metro: "
               f"--procedure calls {FUNCTION_LIST}\n")
    assert nothing_written(tmp_path)


def test_metro_s_own_tables_are_not_targets(run, conn, tmp_path):
    for table in ("settings", "fraud", "card_history_second", "risk_decisions",
                  "transaction_decisions", "bridge_cursors", "bridge_dead_letters",
                  "busiest_stations"):
        path = write(tmp_path, f"{table}.csv", "1,2\n")
        assert run(path) == (2, "", f"loader: metro.{table} is kept by metro itself: "
                                    f"loader loads into {TABLE_LIST}\n"), table
        assert run("--table", f"metro.{table}", path)[0] == 2
    assert rows(conn, "SELECT count(*) FROM settings") == [(1,)]
    assert rows(conn, "SELECT count(*) FROM bridge_cursors WHERE stream = '1'") == [(0,)]
    assert nothing_written(tmp_path)


def test_metro_s_internal_functions_are_not_called(run, conn, tmp_path):
    path = write(tmp_path, "calls.csv", "3\n")
    for function in ("raise_unknown_station", "card_events_check_station", "bridge_prune",
                     "bridge_ack", "risk_rule", "fraud_rule", "is_fraud"):
        assert run("-p", function, path) == (
            2, "", f"loader: metro.{function} is internal to metro: "
                   f"--procedure calls {FUNCTION_LIST}\n"), function
    assert nothing_written(tmp_path)


def test_an_unknown_table_given_with_table_suggests_the_close_name(run, tmp_path):
    path = write(tmp_path, "export.csv", "1,1,0,100,,Ann,,,0\n")
    assert run("--table", "card", path) == (
        2, "", "loader: unknown table metro.card given with --table: did you mean cards?\n")
    assert run("--table", "Stations", path) == (
        2, "", "loader: unknown table metro.Stations given with --table: did you mean "
               "stations?\n")
    assert run("--table", "buses", path) == (
        2, "", f"loader: unknown table metro.buses given with --table: loader loads into "
               f"{TABLE_LIST}\n")
    assert nothing_written(tmp_path)


def test_an_unknown_file_stem_suggests_table(run, tmp_path):
    path = write(tmp_path, "card.csv", "1,1,0,100,,Ann,,,0\n")
    assert run(path) == (2, "", "loader: unknown table metro.card (did you mean --table cards?)\n")


def test_an_unknown_function_suggests_the_close_name(run, tmp_path):
    path = write(tmp_path, "swipes.csv", "1,3\n")
    assert run("-p", "validate_entri", path) == (
        2, "", "loader: unknown function metro.validate_entri given with --procedure: "
               "did you mean validate_entry?\n")
    assert run("-p", "buy_ticket", path) == (
        2, "", "loader: unknown function metro.buy_ticket given with --procedure: "
               f"--procedure calls {FUNCTION_LIST}\n")


def test_qualified_metro_names_are_targets(run, conn, stations, tmp_path):
    conn.execute("INSERT INTO cards (card_id, balance) VALUES (42, 1000)")
    cards = write(tmp_path, "export.csv", "7,1,0,100,,Ann,,,0\n")
    assert run("--table", "metro.cards", cards)[:2] == (0, "export.csv: read 1, loaded 1, "
                                                          "invalid 0\n")
    swipes = write(tmp_path, "swipes.csv", "42,3,2025-03-01 08:00:00+00\n")
    assert run("-p", "metro.validate_entry", swipes)[:2] == (
        0, "swipes.csv: read 1, loaded 1, invalid 0 (accepted 1, refused 0)\n")


def test_every_target_is_checked_before_any_file_loads(run, conn, tmp_path):
    trains = write(tmp_path, "trains.csv", "1,a\n2,b\n")
    bad = write(tmp_path, "settings.csv", "1\n")
    status, out, err = run(trains, bad)
    assert (status, out) == (2, "")
    assert err.startswith("loader: metro.settings is kept by metro itself: ")
    assert rows(conn, "SELECT count(*) FROM trains") == [(0,)]
    assert nothing_written(tmp_path)


def test_a_database_without_the_schema_says_so(empty_db, tmp_path, monkeypatch, capsys):
    from metro.loader import cli
    monkeypatch.setenv("METRO_DATABASE_URL", empty_db("loader_targets"))
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, "trains.csv", "1,a\n")
    assert cli.main([path]) == 2
    assert capsys.readouterr() == (
        "", "loader: table metro.trains is missing from this database: install the schema "
            "with `metro install`\n")
    assert nothing_written(tmp_path)

"""Line ends (LF, CRLF, lone CR, mixed) and huge fields: exact counts, every good row
loaded, one line and an exit status for everything else, never a traceback."""

# ruff: noqa: F811 - the fixtures (run, type_errors) come from test_loader

from __future__ import annotations

from test_loader import log_entries, rows, run, type_errors, write  # noqa: F401 - fixtures

CARD = "{},1,0,{},,{},,,0"


def cards(*lines: str, end: str) -> str:
    return "".join(line + end for line in lines)


def test_cr_only_line_ends_with_a_bad_row(run, conn, tmp_path, type_errors):
    content = cards(CARD.format(1, 100, "Ann"), CARD.format(2, "x", "Bob"),
                    CARD.format(3, 100, "Cid"), end="\r")
    path = write(tmp_path, "cards.csv", content)
    status, out, err = run(path)
    assert (status, err) == (1, "")
    assert out.splitlines()[0] == "cards.csv: read 3, loaded 2, invalid 1"
    assert rows(conn, "SELECT card_id, name FROM cards ORDER BY 1") == [(1, "Ann"), (3, "Cid")]
    assert log_entries(tmp_path, "cards") == [
        'cards.csv line 2: invalid input syntax for type integer: "x" (column balance)']
    # The invalid row exactly as read, CR and all.
    assert (tmp_path / "log" / "cards.invalid.csv").read_bytes() == b"2,1,0,x,,Bob,,,0\r"


def test_cr_only_line_ends_all_good(run, conn, tmp_path):
    path = write(tmp_path, "trains.csv", "1,Aurora\r2,Borealis\r")
    assert run(path) == (0, "trains.csv: read 2, loaded 2, invalid 0\n", "")
    assert rows(conn, "SELECT * FROM trains ORDER BY 1") == [(1, "Aurora"), (2, "Borealis")]


def test_cr_only_line_ends_without_a_final_one_with_a_header(run, conn, tmp_path):
    path = write(tmp_path, "trains.csv", "train_id,name\r1,Aurora\r2,Borealis")
    assert run("--header", path) == (0, "trains.csv: read 2, loaded 2, invalid 0\n", "")
    assert rows(conn, "SELECT count(*) FROM trains") == [(2,)]


def test_a_first_line_ending_in_cr_and_the_rest_in_lf(run, conn, tmp_path):
    path = write(tmp_path, "trains.csv", "1,Aurora\r2,Borealis\n3,Comet\n4,Drifter\n")
    assert run(path) == (0, "trains.csv: read 4, loaded 4, invalid 0\n", "")
    assert rows(conn, "SELECT count(*) FROM trains") == [(4,)]


def test_mixed_line_ends_with_bad_rows(run, conn, tmp_path, type_errors):
    content = ("1,Aurora\r\n" "x,Bad\r" "3,Comet\n" "4,\r\n" "\r" "5,Eagle\r" "-6,Bad\n"
               "7,Fox")
    path = write(tmp_path, "trains.csv", content)
    status, out, _ = run(path)
    assert status == 1
    assert out.splitlines()[:2] == ["trains.csv: read 7, loaded 4, invalid 3",
                                    "trains.csv: 1 blank line skipped"]
    assert rows(conn, "SELECT * FROM trains ORDER BY 1") == [
        (1, "Aurora"), (3, "Comet"), (5, "Eagle"), (7, "Fox")]
    entries = [entry for entry in log_entries(tmp_path, "trains")
               if entry.startswith("trains.csv line ")]
    assert [entry.split(":")[0] for entry in entries] == [
        "trains.csv line 2", "trains.csv line 4", "trains.csv line 7"]
    assert (tmp_path / "log" / "trains.invalid.csv").read_bytes() == b"x,Bad\r4,\r\n-6,Bad\n"


def test_crlf_line_ends_with_a_header_and_a_bad_row(run, conn, tmp_path, type_errors):
    content = cards("card_id,enabled,card_type,balance,expires,name,phone,email,notify",
                    CARD.format(1, 100, "Ann"), CARD.format(2, "x", "Bob"),
                    CARD.format(3, 100, '"Cid\r\nCarter"'), end="\r\n")
    path = write(tmp_path, "cards.csv", content)
    status, out, _ = run("--header", path)
    assert status == 1
    assert out.splitlines()[0] == "cards.csv: read 3, loaded 2, invalid 1"
    assert rows(conn, "SELECT card_id, name FROM cards ORDER BY 1") == [
        (1, "Ann"), (3, "Cid\r\nCarter")]


def test_a_quoted_line_break_in_a_cr_only_file(run, conn, tmp_path):
    path = write(tmp_path, "trains.csv", '1,"Aurora\nExpress"\r2,"Borealis\rNight"\r3,Comet\r')
    assert run(path) == (0, "trains.csv: read 3, loaded 3, invalid 0\n"
                            "trains.csv: 2 records span several lines, the first lines 1 to 2:"
                            ' a quoted field holding a line break, or a stray " in an unquoted'
                            " field\n", "")
    assert rows(conn, "SELECT * FROM trains ORDER BY 1") == [
        (1, "Aurora\nExpress"), (2, "Borealis\rNight"), (3, "Comet")]


def test_a_stray_quote_that_joins_lines_is_named(run, conn, tmp_path):
    # 12" and 6" open and close a quoted section: four lines are read as two records.
    path = write(tmp_path, "stations.csv",
                 '20,12" Street,250,1\n21,Main,250,1\n22,6" Ave,250,1\n23,Last,250,1\n')
    status, out, err = run(path)
    assert (status, err) == (0, "")
    assert out.splitlines() == [
        "stations.csv: read 2, loaded 2, invalid 0",
        "stations.csv: 1 record spans several lines, the first lines 1 to 3: a quoted field"
        ' holding a line break, or a stray " in an unquoted field']
    assert rows(conn, "SELECT station_id FROM stations ORDER BY 1") == [(20,), (23,)]


def test_a_huge_field_beside_a_wrongly_typed_value(run, conn, tmp_path, type_errors):
    huge = "N" * (200 * 1024)
    content = cards(CARD.format(1, 100, huge), CARD.format(2, "lots", huge),
                    CARD.format(3, 100, "Cid"), end="\n")
    path = write(tmp_path, "cards.csv", content)
    status, out, err = run(path)
    assert (status, err) == (1, "")
    # The huge field is read whole, and a card holder's name is at most 200 characters:
    # both rows that carry it are refused, each for its own reason.
    assert out.splitlines()[0] == "cards.csv: read 3, loaded 1, invalid 2"
    assert rows(conn, "SELECT card_id, length(name) FROM cards ORDER BY 1") == [(3, 3)]
    entries = log_entries(tmp_path, "cards")
    assert len(entries) == 2
    assert entries[0] == ('cards.csv line 1: value for domain card_name violates check'
                          ' constraint "card_name_at_most_200_characters" (column name)')
    assert entries[1].startswith("cards.csv line 2: ")


def test_a_huge_field_in_a_procedure_row(run, conn, tmp_path):
    huge = "t" * (200 * 1024)
    path = write(tmp_path, "payments.csv",
                 f"p-1,7,10.00\n{huge},7,12.00\np-2,7,x\np-3,7,20.00\n")
    status, out, err = run("-p", "evaluate_transaction", path)
    assert (status, err) == (1, "")
    assert out.splitlines()[0] == \
        "payments.csv: read 4, loaded 2, invalid 2 (blocked 0, passed 2)"
    entries = log_entries(tmp_path, "payments")
    assert [entry.split(":")[0] for entry in entries] == ["payments.csv line 2",
                                                          "payments.csv line 3"]
    assert entries[0].startswith("payments.csv line 2: Invalid transaction_id: 'tttt")
    assert rows(conn, "SELECT transaction_id FROM risk_decisions ORDER BY 1") == [
        ("p-1",), ("p-3",)]


def test_cr_only_lines_across_batches(run, conn, tmp_path, type_errors):
    lines = [f"{'x' if n % 7 == 3 else n},Train {n}" for n in range(1, 101)]
    path = write(tmp_path, "trains.csv", "\r".join(lines) + "\r")
    status, out, _ = run("--batch", "8", path)
    bad = [n for n in range(1, 101) if n % 7 == 3]
    assert status == 1
    assert out.splitlines()[0] == f"trains.csv: read 100, loaded {100 - len(bad)}, " \
                                  f"invalid {len(bad)}"
    assert rows(conn, "SELECT count(*) FROM trains") == [(100 - len(bad),)]
    assert [int(entry.split()[2].rstrip(":")) for entry in log_entries(tmp_path, "trains")] \
        == bad


def test_cr_only_line_ends_in_a_procedure_file(run, conn, stations, tmp_path):
    conn.execute("INSERT INTO cards (card_id, balance) VALUES (42, 1000)")
    path = write(tmp_path, "swipes.csv", "42,3,2025-03-01 08:00:00+00\r42,99,2025-03-01 "
                                         "08:10:00+00\r43,3,2025-03-01 08:20:00+00\r")
    status, out, _ = run("-p", "validate_entry", path)
    assert status == 1
    assert out.splitlines()[0] == \
        "swipes.csv: read 3, loaded 2, invalid 1 (accepted 1, refused 1)"
    assert log_entries(tmp_path, "swipes") == [
        "swipes.csv line 2: Unknown station: 99: No row in metro.stations has station_id 99."]
    assert rows(conn, "SELECT card_id, accept FROM card_events ORDER BY event_id") == [
        (42, 1), (43, 0)]


def test_a_byte_order_mark_is_not_data_with_or_without_a_header(run, conn, tmp_path):
    # Spreadsheets save "CSV UTF-8" with a BOM; without a header it came before the
    # first card number, which was then refused (and called a header).
    bom = "\ufeff"
    path = write(tmp_path, "cards.csv", bom + cards(CARD.format(1, 100, "Ann"),
                                                    CARD.format(2, 100, "Bob"), end="\r\n"))
    assert run(path) == (0, "cards.csv: read 2, loaded 2, invalid 0\n", "")
    path = write(tmp_path, "trains.csv", bom + "train_id,name\n1,Aurora\n")
    assert run("--header", path) == (0, "trains.csv: read 1, loaded 1, invalid 0\n", "")
    assert rows(conn, "SELECT card_id, name FROM cards ORDER BY 1") == [(1, "Ann"), (2, "Bob")]
    assert rows(conn, "SELECT * FROM trains") == [(1, "Aurora")]

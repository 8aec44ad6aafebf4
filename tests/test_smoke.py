def test_validate_entry_unknown_card(conn, stations):
    row = conn.execute("SELECT * FROM validate_entry(42, 3)").fetchone()
    assert row == (False, "Card Invalid")

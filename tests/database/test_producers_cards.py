"""The card generator: its documented mix, determinism by seed, and a CSV the database loads."""

from __future__ import annotations

import csv
import io
from collections import Counter
from datetime import date

import pytest

from metro.producers import cards
from metro.producers.cli import main

AS_OF = date(2030, 1, 15)


def generated_csv(count: int, seed: int, as_of: date = AS_OF) -> str:
    output = io.StringIO()
    cards.write_csv(cards.generate(count, as_of, seed=seed), output, as_of)
    return output.getvalue()


def test_same_seed_same_cards_other_seed_other_cards():
    assert generated_csv(2000, seed=11) == generated_csv(2000, seed=11)
    assert generated_csv(2000, seed=11) != generated_csv(2000, seed=12)


def test_mix_matches_the_documented_shares():
    rows = list(csv.DictReader(io.StringIO(generated_csv(20_000, seed=3))))
    assert [int(row["card_id"]) for row in rows] == list(range(1, 20_001))
    count = len(rows)
    unlimited = [row for row in rows if row["card_type"] == "1"]
    per_ride = [row for row in rows if row["card_type"] == "0"]
    assert len(unlimited) + len(per_ride) == count
    assert len(unlimited) / count == pytest.approx(cards.UNLIMITED_SHARE, abs=0.01)
    disabled = sum(row["enabled"] == "0" for row in rows)
    assert disabled / count == pytest.approx(cards.DISABLED_SHARE, abs=0.005)
    expired = sum(row["expires"] < "2030-01-15T00:00:00Z" for row in unlimited)
    assert expired / len(unlimited) == pytest.approx(cards.EXPIRED_SHARE, abs=0.03)
    assert all("2029-07-19T00:00:00Z" <= row["expires"] <= "2031-01-15T00:00:00Z"
               and row["balance"] == "0" for row in unlimited)
    # Balance tiers, in steps of 0.25.
    tiers = Counter()
    for row in per_ride:
        balance = int(row["balance"])
        assert row["expires"] == "" and balance % 25 == 0
        tier = next(index for index, (_, (low, high)) in enumerate(cards.BALANCE_TIERS)
                    if low <= balance <= high)
        tiers[tier] += 1
    for index, (share, _) in enumerate(cards.BALANCE_TIERS):
        assert tiers[index] / len(per_ride) == pytest.approx(share, abs=0.02)
    # Alerts, and the contact each one needs.
    notify = Counter(row["notify"] for row in rows)
    for share, value in cards.NOTIFY_MIX:
        assert notify[str(value)] / count == pytest.approx(share, abs=0.02)
    assert all(row["email"] for row in rows if row["notify"] == "1")
    assert all(row["phone"] for row in rows if row["notify"] == "2")
    assert all(row["name"] for row in rows)


def test_cli_writes_the_file_and_reports_the_mix(tmp_path, capsys):
    path = tmp_path / "cards.csv"
    assert main(["cards", "--count", "500", "--seed", "5", "--as-of", "2030-01-15",
                 "--output", str(path)]) == 0
    assert path.read_text() == generated_csv(500, seed=5)
    report = capsys.readouterr().err
    written = Counter(row["card_type"] for row in csv.DictReader(io.StringIO(path.read_text())))
    assert f"wrote 500 cards to {path}: {written['0']} pay-per-ride, {written['1']} unlimited" \
        in report


def test_first_id_shifts_the_numbering():
    first = next(cards.generate(3, AS_OF, seed=1, first_id=1_000_001))
    assert first.card_id == 1_000_001


@pytest.mark.parametrize("option, says", [
    (["--count", "0"], "argument --count: must be positive: 0"),
    (["--count", "3", "--first-id", "-3"], "argument --first-id: must not be negative: -3"),
])
def test_cli_refuses_a_bad_count_or_first_id(option, says, tmp_path, capsys):
    path = tmp_path / "cards.csv"
    with pytest.raises(SystemExit) as exit_info:
        main(["cards", *option, "--output", str(path)])
    assert exit_info.value.code == 2
    assert says in capsys.readouterr().err
    assert not path.exists()


def test_generated_csv_loads_into_cards(conn):
    with conn.cursor().copy("COPY metro.cards FROM STDIN (FORMAT csv, HEADER true)") as copy:
        copy.write(generated_csv(3000, seed=9))
    row = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE NOT enabled),"
        " count(*) FILTER (WHERE card_type = 1 AND expires < '2030-01-15'),"
        " count(*) FILTER (WHERE card_type = 0 AND expires IS NULL),"
        " count(*) FILTER (WHERE phone IS NULL OR email IS NULL) FROM metro.cards").fetchone()
    rows = list(csv.DictReader(io.StringIO(generated_csv(3000, seed=9))))
    assert row == (
        3000,
        sum(r["enabled"] == "0" for r in rows),
        sum(r["card_type"] == "1" and r["expires"] < "2030-01-15" for r in rows),
        sum(r["card_type"] == "0" for r in rows),
        sum(not r["phone"] or not r["email"] for r in rows))

"""The README's psql walkthrough runs as written and prints what the README shows."""

import re
from pathlib import Path

import psycopg
from commands import run_metro


def sql_block(section: str) -> str:
    """The first ```sql block after the README heading `section`."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    return text.split(f"\n{section}\n", 1)[1].split("```sql\n", 1)[1].split("```", 1)[0]


def walkthrough(section: str = "## Calling it from psql"):
    """(statement, expected rows) pairs from a README sql block: a statement per line,
    psql's rows as `--  ` comments under it (column headers and rules left out)."""
    block = sql_block(section)
    steps: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("--  "):
            row = line[4:]
            if "accepted |" in row or "blocked |" in row:
                continue
            steps[-1][1].append(re.sub(r"\s*\|\s*", "|", row.strip()))
        elif line.startswith("-- ") and set(line[3:].strip()) <= {"-", "+"}:
            continue  # psql's header rule
        elif line.strip() and not line.startswith("--"):
            steps.append((line, []))
    return steps


def run_steps(dsn, steps):
    for statement, expected in steps:
        result = run_metro("psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1",
                           "-c", statement, dsn=dsn)
        assert result.returncode == 0, (statement, result.stderr)
        if expected:
            assert result.stdout.splitlines() == expected, statement


def test_readme_walkthrough(empty_db):
    dsn = empty_db("readme")
    assert run_metro("install", dsn=dsn).returncode == 0
    steps = walkthrough()
    assert len(steps) == 13
    run_steps(dsn, steps)
    # The rollup step filled the history the walkthrough then shows.
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT station_id, swipes, fraud FROM metro.station_second_stats"
                            " WHERE second_start = '2026-11-23 08:00:00+00' ORDER BY 1"
                            ).fetchall() == [(4, 1, 0), (9, 1, 1)]


def test_readme_payment_example(empty_db):
    """The payment example runs as written on a fresh install and prints what it shows:
    its account must be tagged high-risk in the example itself for the block to hold."""
    dsn = empty_db("readme_payment")
    assert run_metro("install", dsn=dsn).returncode == 0
    steps = walkthrough("## Payment risk control")
    assert [expected for _, expected in steps if expected] == [
        ["t|high_risk_above_10000|Blocked: amount above 10,000.00 from a high-risk account"]]
    run_steps(dsn, steps)

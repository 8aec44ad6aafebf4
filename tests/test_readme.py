"""The README's psql walkthrough runs as written and prints what the README shows."""

import re
from pathlib import Path

from commands import run_metro


def walkthrough():
    """(statement, expected rows) pairs from the README's psql block."""
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = text.split("## Calling it from psql", 1)[1].split("```sql\n", 1)[1].split("```", 1)[0]
    steps: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("--  "):
            row = line[4:]
            if "accepted |" in row:
                continue
            steps[-1][1].append(re.sub(r"\s*\|\s*", "|", row.strip()))
        elif line.startswith("-- ") and set(line[3:].strip()) <= {"-", "+"}:
            continue  # psql's header rule
        elif line.strip() and not line.startswith("--"):
            steps.append((line, []))
    return steps


def test_readme_walkthrough(empty_db):
    dsn = empty_db("readme")
    assert run_metro("install", dsn=dsn).returncode == 0
    steps = walkthrough()
    assert len(steps) == 12
    for statement, expected in steps:
        result = run_metro("psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1",
                           "-c", statement, dsn=dsn)
        assert result.returncode == 0, (statement, result.stderr)
        if expected:
            assert result.stdout.splitlines() == expected, statement

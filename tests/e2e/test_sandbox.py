"""`metro sandbox`: the README's walkthrough runs as written in a fresh database, even
where the demo already loaded its stations and cards."""

import os
import subprocess
from pathlib import Path

import psycopg
from commands import METRO
from psycopg import sql
from test_readme import walkthrough

from metro.app.cli import SANDBOX
from metro.database import with_dbname


def test_walkthrough_in_a_sandbox_after_the_demo_loaded_its_data(db, stations, conn):
    # What a demo run leaves behind: its stations (loaded by the fixture) and its cards.
    conn.execute("INSERT INTO metro.cards (card_id, balance) "
                 "SELECT g, 1000 FROM generate_series(1, 100) g")
    steps = walkthrough()
    script = "\n".join(statement for statement, _ in steps) + "\n"
    expected = [row for _, rows in steps for row in rows]
    try:
        result = subprocess.run(
            [*METRO, "sandbox", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-F", "|"],
            input=script, capture_output=True, text=True, timeout=120,
            cwd=Path(__file__).resolve().parents[2],
            env={**os.environ, "METRO_DATABASE_URL": db})
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0].startswith(f"fresh database {SANDBOX} with the metro schema at revision")
        printed = [line for line in lines[1:] if line.strip()]
        assert [row for row in printed if row in expected] == expected
        # The demo's database kept its own cards and stations.
        assert conn.execute("SELECT count(*) FROM metro.cards").fetchone() == (100,)
    finally:
        with psycopg.connect(with_dbname(db, "postgres"), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(SANDBOX)))

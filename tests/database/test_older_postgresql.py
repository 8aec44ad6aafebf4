"""metro on PostgreSQL releases older than the embedded one: the oldest it supports (13,
from Maven Central) and Debian's packaged server where the machine has one (built with
JIT). The database tests that exercise the schema's SQL run against each, as a user's
own server runs them (METRO_DATABASE_URL)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from older_servers import OLDEST, debian_releases, embedded_major, maven_release

from metro.embedded import EmbeddedServer

REPO = Path(__file__).resolve().parent.parent.parent
# The install's refusal in the server's words, the gates and their plans (JIT included),
# the batch, the rollup, partitions and maintenance, and the payment rules.
SUITE = ["tests/database/test_install.py::test_an_owner_without_rights_over_the_roles_is_told_so"
         ] + [f"tests/database/{name}.py" for name in (
             "test_validate_entries", "test_history", "test_partitions", "test_risk_rules")]
RELEASES = [pytest.param(None, "postgresql-" + OLDEST, id="postgresql-" + OLDEST)] + [
    pytest.param(binaries, "debian-postgresql-" + binaries.parent.name,
                 id="debian-postgresql-" + binaries.parent.name)
    for binaries in debian_releases()]


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("binaries, name", RELEASES)
def test_the_schema_tests_pass_on_an_older_release(binaries, name):
    binaries = binaries or maven_release(OLDEST, REPO / ".metro-test")
    # Beside the suite's own servers, not under pytest's temporary directory: the
    # tests' pytest makes that directory private again, out of the server's reach.
    server = EmbeddedServer(REPO / ".metro-test" / f"server-{name}", binaries=binaries)
    server.start()
    try:
        with psycopg.connect(server.conninfo()) as conn:
            version = conn.execute("SHOW server_version_num").fetchone()
        assert version is not None and int(version[0]) // 10000 < embedded_major()
        # The inner pytest is not a worker of this one.
        env = {key: value for key, value in os.environ.items()
               if not key.startswith("PYTEST_")}
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SUITE],
            cwd=REPO, env={**env, "METRO_DATABASE_URL": server.url()},
            capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
        summary = result.stdout.strip().splitlines()[-1]
        # On failure: which tests, and the first lines of what went wrong.
        assert result.returncode == 0, "\n".join(
            [line for line in result.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
            + [line for line in result.stdout.splitlines() if line.startswith("E ")][:30])
        assert re.fullmatch(r"\d+ passed in .*", summary), summary
    finally:
        server.stop()

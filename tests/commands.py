"""Running the project's commands the way a user does: a subprocess with its own environment."""

import os
import subprocess
import sys
from pathlib import Path

METRO = [sys.executable, "-m", "metro.app.cli"]


def run_metro(*args, dsn=None, home=None):
    """`metro ARGS` against METRO_DATABASE_URL=dsn or the embedded server under home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.pop("METRO_DATABASE_URL", None)
    if dsn is not None:
        env["METRO_DATABASE_URL"] = dsn
    if home is not None:
        env["METRO_HOME"] = str(home)
    return subprocess.run([*METRO, *args], capture_output=True, text=True, env=env, timeout=120,
                          cwd=Path(__file__).resolve().parent.parent)


def metro(dsn, *args):
    """`metro ARGS` against the database dsn."""
    return run_metro(*args, dsn=dsn)


def loader_command(tmp_path, url, *args):
    """The installed `loader` command, as a user runs it, in tmp_path."""
    return subprocess.run([str(Path(sys.executable).with_name("loader")), *args],
                          env={**os.environ, "METRO_DATABASE_URL": url}, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)

"""Who holds the commit horizon back, for the status commands: the oldest open transaction
with a transaction id, on any database of the server. The bridge and the rollup read only
rows committed before it began, so what was committed after waits until it ends."""

from __future__ import annotations

from typing import Any

import psycopg

Horizon = tuple[Any, ...]


def holder(conn: psycopg.Connection) -> Horizon | None:
    """(pid, role, database, application, state, transaction start, its age), or None."""
    row = conn.execute("SELECT pid, role, database, application_name, state, xact_start,"
                       " xact_age FROM metro.bridge_horizon()").fetchone()
    return tuple(row) if row else None


def line(horizon: Horizon | None, waiting: str) -> str:
    """One line naming the holder and what waits for it (delivery, the rollup)."""
    if horizon is None:
        return f"commit horizon: no open transaction holds {waiting} back"
    pid, role, database, application, state, xact_start, age = horizon
    who = f"pid {pid}" if pid is not None else application
    seconds = age.total_seconds() if age is not None else 0.0
    return (f"commit horizon: held by {who} (role {role}, database {database}"
            + (f", application {application!r}" if pid is not None and application else "")
            + f", {state or 'state unknown'}), its transaction open for {seconds:.1f} s"
            + (f" since {xact_start:%Y-%m-%d %H:%M:%S}" if xact_start else "")
            + ": rows committed after it began wait until it ends")

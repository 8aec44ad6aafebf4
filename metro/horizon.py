"""Who holds the commit horizon back, for the status commands: the oldest open transaction
with a transaction id, on any database of the server. The bridge and the rollup read only
rows committed before it began, so what was committed after waits until it ends. A
transaction younger than a second is not named: the services' own rounds open one many times
a second, and the status is read to find what holds rows back for long."""

from __future__ import annotations

from typing import Any

import psycopg

Horizon = tuple[Any, ...]
MOMENT_SECONDS = 1.0


def holder(conn: psycopg.Connection) -> Horizon | None:
    """(pid, role, database, application, state, transaction start, its age), or None."""
    row = conn.execute("SELECT pid, role, database, application_name, state, xact_start,"
                       " xact_age FROM metro.bridge_horizon()").fetchone()
    return tuple(row) if row else None


def line(horizon: Horizon | None, waiting: str) -> str:
    """One line naming the holder and what waits for it (delivery, the rollup)."""
    pid, role, database, application, state, xact_start, age = horizon or (None,) * 7
    seconds = age.total_seconds() if age is not None else 0.0
    if horizon is None or seconds < MOMENT_SECONDS:
        return (f"commit horizon: no transaction open for {MOMENT_SECONDS:.0f} s or more"
                f" holds {waiting} back")
    who = f"pid {pid}" if pid is not None else application
    return (f"commit horizon: held by {who} (role {role}, database {database}"
            + (f", application {application!r}" if pid is not None and application else "")
            + f", {state or 'state unknown'}), its transaction open for {seconds:.1f} s"
            + (f" since {xact_start:%Y-%m-%d %H:%M:%S}" if xact_start else "")
            + ": rows committed after it began wait until it ends")

"""`metro worker --status`: who holds the lease, the lag per source, the last maintenance."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from metro import horizon
from metro.backlog import STATUS_COUNT_LIMIT, pending_text


@dataclass
class WorkerStatus:
    holder: str | None
    since: datetime | None
    lease_until: datetime | None
    heartbeat_at: datetime | None
    last_maintenance_at: datetime | None
    last_maintenance: str | None
    last_error: str | None
    last_error_at: datetime | None
    lag: list[tuple[Any, ...]]
    now: datetime
    horizon: horizon.Horizon | None = None
    count_limit: int = STATUS_COUNT_LIMIT

    @property
    def lease_held(self) -> bool:
        return self.lease_until is not None and self.lease_until > self.now


def collect(conn: psycopg.Connection, count_limit: int = STATUS_COUNT_LIMIT) -> WorkerStatus:
    state = conn.execute(
        "SELECT holder, since, lease_until, heartbeat_at, last_maintenance_at, last_maintenance,"
        " last_error, last_error_at, now() FROM metro.worker_state").fetchone()
    assert state is not None
    lag = conn.execute("SELECT source, rolled_up, rolled_up_at, pending, oldest_pending"
                       " FROM metro.worker_lag(%s)", (count_limit,)).fetchall()
    (holder, since, lease_until, heartbeat_at, last_maintenance_at, last_maintenance, last_error,
     last_error_at, now) = state
    return WorkerStatus(holder, since, lease_until, heartbeat_at, last_maintenance_at,
                        last_maintenance, last_error, last_error_at, lag, now,
                        horizon.holder(conn), count_limit)


def _ago(then: datetime | None, now: datetime) -> str:
    if then is None:
        return "-"
    seconds = (now - then).total_seconds()
    if seconds < 0:
        return f"in {-seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.1f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def render(status: WorkerStatus) -> str:
    now = status.now
    if status.lease_held:
        lease = (f"lease: held by {status.holder} since {_ago(status.since, now)},"
                 f" renewed {_ago(status.heartbeat_at, now)}")
    elif status.holder:
        lease = (f"lease: free (last held by {status.holder},"
                 f" expired {_ago(status.lease_until, now)})")
    else:
        lease = "lease: free (no `metro worker` has held it; --once needs none)"
    lines = [lease, horizon.line(status.horizon, "the rollup")]
    lines.append("last maintenance: " + (
        f"{_ago(status.last_maintenance_at, now)}: {status.last_maintenance}"
        if status.last_maintenance_at else "never"))
    if status.last_error:
        lines.append(f"last error ({_ago(status.last_error_at, now)}): {status.last_error}")
    lines.append("")
    header = ("source", "rolled up", "cursor moved", "pending", "oldest pending")
    rows = [(source, f"{rolled:,}", _ago(moved, now), pending_text(pending, status.count_limit),
             _ago(oldest, now))
            for source, rolled, moved, pending, oldest in status.lag]
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)

"""`metro bridge --status`: who holds the lease, what holds delivery back, lag per stream,
outbound dead letters, last error, inbound offsets.

The last error stays recorded; it is shown as resolved once something worked after it:
Kafka acknowledged a batch (bridge_acks), an inbound partition moved on
(bridge_inbound_offsets), or a bridge took the lease after it and kept forwarding for a
heartbeat interval (a heartbeat at least HEARTBEAT_SECONDS after `since`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from metro import horizon
from metro.backlog import STATUS_COUNT_LIMIT, pending_text

from .runner import HEARTBEAT_SECONDS


@dataclass
class BridgeStatus:
    lease_held: bool
    holder: str | None
    since: datetime | None
    heartbeat_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    streams: list[tuple[Any, ...]]
    inbound: list[tuple[Any, ...]]
    dead_letters: int
    now: datetime
    resolved_at: datetime | None = None       # when something first worked after last_error
    newest_dead_letter: tuple[Any, ...] | None = None  # topic, partition, offset, reason, at
    lease_pid: int | None = None
    lease_expires: datetime | None = None
    # The oldest transaction holding the commit horizon (metro.bridge_horizon()), or None.
    horizon: tuple[Any, ...] | None = None
    # Outbound dead letters per stream: (stream, count, last position, last reason).
    refused: list[tuple[Any, ...]] | None = None
    # Pending rows are counted up to this many per stream (metro.backlog).
    count_limit: int = STATUS_COUNT_LIMIT


def collect(conn: psycopg.Connection, count_limit: int = STATUS_COUNT_LIMIT) -> BridgeStatus:
    # Held: by a live backend (pid and start time still in pg_stat_activity) and not expired.
    state = conn.execute(
        "SELECT holder, since, heartbeat_at, last_error, last_error_at, lease_pid,"
        " lease_expires, lease_pid IS NOT NULL AND lease_expires > clock_timestamp()"
        " AND EXISTS (SELECT FROM pg_stat_activity a WHERE a.pid = s.lease_pid"
        "             AND (a.backend_start IS NULL OR s.lease_backend_start IS NULL"
        "                  OR a.backend_start = s.lease_backend_start))"
        " FROM metro.bridge_state s").fetchone()
    assert state is not None
    held_by = horizon.holder(conn)
    refused = conn.execute(
        "SELECT DISTINCT ON (stream) stream, count(*) OVER (PARTITION BY stream), position,"
        " reason FROM metro.bridge_outbound_dead_letters ORDER BY stream, id DESC").fetchall()
    streams = conn.execute("SELECT stream, topic, delivered, acked_at, pending, oldest_pending"
                           " FROM metro.bridge_lag(%s)", (count_limit,)).fetchall()
    inbound = conn.execute("SELECT topic, kafka_partition, next_offset, applied, dead_lettered,"
                           " updated_at FROM metro.bridge_inbound_offsets"
                           " ORDER BY topic, kafka_partition").fetchall()
    dead = conn.execute("SELECT count(*), now() FROM metro.bridge_dead_letters").fetchone()
    assert dead is not None
    newest = conn.execute("SELECT topic, kafka_partition, kafka_offset, reason, received_at"
                          " FROM metro.bridge_dead_letters ORDER BY id DESC LIMIT 1").fetchone()
    holder, since, heartbeat_at, last_error, last_error_at, lease_pid, lease_expires, held = state
    return BridgeStatus(held, holder, since, heartbeat_at, last_error, last_error_at,
                        streams, inbound, dead[0], dead[1],
                        resolved(conn, since, heartbeat_at, last_error_at), newest,
                        lease_pid, lease_expires, held_by, refused,
                        count_limit)


def resolved(conn: psycopg.Connection, since: datetime | None, heartbeat_at: datetime | None,
             error_at: datetime | None) -> datetime | None:
    """When the bridge first worked after its last error, or None."""
    if error_at is None:
        return None
    row = conn.execute(
        "SELECT least((SELECT min(acked_at) FROM metro.bridge_acks WHERE acked_at > %(at)s),"
        " (SELECT min(updated_at) FROM metro.bridge_inbound_offsets WHERE updated_at > %(at)s))",
        {"at": error_at}).fetchone()
    candidates = [row[0]] if row and row[0] is not None else []
    if (since is not None and heartbeat_at is not None and since > error_at
            and heartbeat_at - since >= timedelta(seconds=HEARTBEAT_SECONDS)):
        candidates.append(since)
    return min(candidates, default=None)


def _ago(then: datetime | None, now: datetime) -> str:
    if then is None:
        return "-"
    seconds = max(0.0, (now - then).total_seconds())
    if seconds < 120:
        return f"{seconds:.1f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def table(header: list[str], rows: list[list[str]], align: str) -> list[str]:
    """Columns as wide as their content, each aligned by its letter in `align` (l or r),
    one space apart, two before the last."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        parts = [cell.ljust(width) if side == "l" else cell.rjust(width)
                 for cell, width, side in zip(cells, widths, align, strict=True)]
        return (" ".join(parts[:-1]) + "  " + parts[-1]).rstrip()

    return [line(row) for row in [header, *rows]]


def _error_line(status: BridgeStatus) -> str:
    if not status.last_error:
        return "last error: none"
    ago = _ago(status.last_error_at, status.now)
    if status.resolved_at is not None and status.last_error_at is not None:
        later = (status.resolved_at - status.last_error_at).total_seconds()
        return f"last error (resolved {later:.1f} s later): {status.last_error} ({ago})"
    return f"last error: {status.last_error} ({ago})"


def render(status: BridgeStatus) -> str:
    now = status.now
    if status.lease_held:
        lease = (f"running: {status.holder} holds the lease since {status.since:%Y-%m-%d %H:%M:%S}"
                 f" (heartbeat {_ago(status.heartbeat_at, now)})")
    else:
        lease = "not running: no bridge holds the lease" + (
            f" (last holder {status.holder}, heartbeat {_ago(status.heartbeat_at, now)})"
            if status.holder else "")
    lines = [lease, _error_line(status), horizon.line(status.horizon, "delivery"), ""]
    rows = []
    for stream, topic, delivered, acked_at, pending, oldest in status.streams:
        oldest_text = "-" if oldest is None else f"{oldest:%Y-%m-%d %H:%M:%S} ({_ago(oldest, now)})"
        rows.append([stream, topic, str(delivered), pending_text(pending, status.count_limit),
                     oldest_text, _ago(acked_at, now)])
    lines += table(["stream", "topic", "delivered", "pending", "oldest pending (event time)",
                    "last ack"], rows, "llrrll")
    refused = status.refused or []
    lines.append(f"outbound dead letters: {sum(r[1] for r in refused)}"
                 + (" (SELECT * FROM metro.bridge_outbound_dead_letters)" if refused else ""))
    for stream, count, position, reason in refused:
        lines.append(f"  {stream}: {count}, last at position {position}: {reason}")
    lines.append("")
    if not status.inbound:
        lines.append("inbound: nothing consumed yet")
    else:
        lines += table(["inbound topic", "partition", "next offset", "applied", "dead-lettered",
                        "updated"],
                       [[topic, str(partition), str(next_offset), str(applied), str(dead),
                         _ago(updated_at, now)]
                        for topic, partition, next_offset, applied, dead, updated_at
                        in status.inbound], "lrrrrl")
    text = f"dead letters: {status.dead_letters}"
    if status.newest_dead_letter is not None:
        topic, partition, offset, reason, at = status.newest_dead_letter
        text += (f"; newest {topic}[{partition}]@{offset} ({_ago(at, now)}): {reason} "
                 "(SELECT * FROM metro.bridge_dead_letters)")
    lines.append(text)
    return "\n".join(lines)

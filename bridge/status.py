"""`metro bridge --status`: who holds the lease, what holds delivery back, lag per stream,
outbound dead letters, last error, inbound offsets."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg


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
    lease_pid: int | None = None
    lease_expires: datetime | None = None
    # The oldest transaction holding the commit horizon (metro.bridge_horizon()), or None.
    horizon: tuple[Any, ...] | None = None
    # Outbound dead letters per stream: (stream, count, last position, last reason).
    refused: list[tuple[Any, ...]] | None = None


def collect(conn: psycopg.Connection) -> BridgeStatus:
    # Held: by a live backend (pid and start time still in pg_stat_activity) and not expired.
    state = conn.execute(
        "SELECT holder, since, heartbeat_at, last_error, last_error_at, lease_pid,"
        " lease_expires, lease_pid IS NOT NULL AND lease_expires > clock_timestamp()"
        " AND EXISTS (SELECT FROM pg_stat_activity a WHERE a.pid = s.lease_pid"
        "             AND (a.backend_start IS NULL OR s.lease_backend_start IS NULL"
        "                  OR a.backend_start = s.lease_backend_start))"
        " FROM metro.bridge_state s").fetchone()
    assert state is not None
    horizon = conn.execute("SELECT pid, role, database, application_name, state, xact_start,"
                           " xact_age FROM metro.bridge_horizon()").fetchone()
    refused = conn.execute(
        "SELECT DISTINCT ON (stream) stream, count(*) OVER (PARTITION BY stream), position,"
        " reason FROM metro.bridge_outbound_dead_letters ORDER BY stream, id DESC").fetchall()
    streams = conn.execute("SELECT stream, topic, delivered, acked_at, pending, oldest_pending"
                           " FROM metro.bridge_lag()").fetchall()
    inbound = conn.execute("SELECT topic, kafka_partition, next_offset, applied, dead_lettered,"
                           " updated_at FROM metro.bridge_inbound_offsets"
                           " ORDER BY topic, kafka_partition").fetchall()
    dead = conn.execute("SELECT count(*), now() FROM metro.bridge_dead_letters").fetchone()
    assert dead is not None
    holder, since, heartbeat_at, last_error, last_error_at, lease_pid, lease_expires, held = state
    return BridgeStatus(held, holder, since, heartbeat_at, last_error, last_error_at,
                        streams, inbound, dead[0], dead[1], lease_pid, lease_expires,
                        tuple(horizon) if horizon else None, refused)


def _ago(then: datetime | None, now: datetime) -> str:
    if then is None:
        return "-"
    seconds = max(0.0, (now - then).total_seconds())
    if seconds < 120:
        return f"{seconds:.1f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def horizon_line(horizon: tuple[Any, ...] | None) -> str:
    """Who holds delivery back: stream rows of transactions that began after the oldest open
    one wait until it ends."""
    if horizon is None:
        return "commit horizon: no open transaction holds delivery back"
    pid, role, database, application, state, xact_start, age = horizon
    who = f"pid {pid}" if pid is not None else application
    seconds = age.total_seconds() if age is not None else 0.0
    return (f"commit horizon: held by {who} (role {role}, database {database}"
            + (f", application {application!r}" if pid is not None and application else "")
            + f", {state or 'state unknown'}), its transaction open for {seconds:.1f} s"
            + (f" since {xact_start:%Y-%m-%d %H:%M:%S}" if xact_start else "")
            + ": rows committed after it began wait until it ends")


def render(status: BridgeStatus) -> str:
    now = status.now
    if status.lease_held:
        lease = (f"running: {status.holder} holds the lease since {status.since:%Y-%m-%d %H:%M:%S}"
                 f" (heartbeat {_ago(status.heartbeat_at, now)})")
    else:
        lease = "not running: no bridge holds the lease" + (
            f" (last holder {status.holder}, heartbeat {_ago(status.heartbeat_at, now)})"
            if status.holder else "")
    error = (f"last error: {status.last_error} ({_ago(status.last_error_at, now)})"
             if status.last_error else "last error: none")
    lines = [lease, error, horizon_line(status.horizon), "",
             f"{'stream':<18} {'topic':<18} {'delivered':>10} {'pending':>8}  "
             f"{'oldest pending (event time)':<28} last ack"]
    for stream, topic, delivered, acked_at, pending, oldest in status.streams:
        oldest_text = "-" if oldest is None else f"{oldest:%Y-%m-%d %H:%M:%S} ({_ago(oldest, now)})"
        lines.append(f"{stream:<18} {topic:<18} {delivered:>10} {pending:>8}  "
                     f"{oldest_text:<28} {_ago(acked_at, now)}")
    refused = status.refused or []
    lines.append(f"outbound dead letters: {sum(r[1] for r in refused)}"
                 + (" (SELECT * FROM metro.bridge_outbound_dead_letters)" if refused else ""))
    for stream, count, position, reason in refused:
        lines.append(f"  {stream}: {count}, last at position {position}: {reason}")
    lines += ["", f"{'inbound topic':<14} {'partition':>9} {'next offset':>12} {'applied':>8} "
                  f"{'dead-lettered':>13}  updated"]
    if not status.inbound:
        lines.append("(nothing consumed yet)")
    for topic, partition, next_offset, applied, dead, updated_at in status.inbound:
        lines.append(f"{topic:<14} {partition:>9} {next_offset:>12} {applied:>8} {dead:>13}  "
                     f"{_ago(updated_at, now)}")
    lines.append(f"dead letters: {status.dead_letters}"
                 + (" (SELECT * FROM metro.bridge_dead_letters)" if status.dead_letters else ""))
    return "\n".join(lines)

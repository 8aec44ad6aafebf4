"""`metro bridge --status`: who holds the lease, lag per stream, last error, inbound offsets."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from .runner import LEASE_KEY


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


def collect(conn: psycopg.Connection) -> BridgeStatus:
    held = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
        " WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database()"
        " AND l.classid = %s AND l.objid = %s AND l.objsubid = 2)", LEASE_KEY).fetchone()
    state = conn.execute("SELECT holder, since, heartbeat_at, last_error, last_error_at"
                         " FROM metro.bridge_state").fetchone()
    assert held is not None and state is not None
    streams = conn.execute("SELECT stream, topic, delivered, acked_at, pending, oldest_pending"
                           " FROM metro.bridge_lag()").fetchall()
    inbound = conn.execute("SELECT topic, kafka_partition, next_offset, applied, dead_lettered,"
                           " updated_at FROM metro.bridge_inbound_offsets"
                           " ORDER BY topic, kafka_partition").fetchall()
    dead = conn.execute("SELECT count(*), now() FROM metro.bridge_dead_letters").fetchone()
    assert dead is not None
    holder, since, heartbeat_at, last_error, last_error_at = state
    return BridgeStatus(held[0], holder, since, heartbeat_at, last_error, last_error_at,
                        streams, inbound, dead[0], dead[1])


def _ago(then: datetime | None, now: datetime) -> str:
    if then is None:
        return "-"
    seconds = max(0.0, (now - then).total_seconds())
    if seconds < 120:
        return f"{seconds:.1f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


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
    lines = [lease, error, "",
             f"{'stream':<18} {'topic':<18} {'delivered':>10} {'pending':>8}  "
             f"{'oldest pending (event time)':<28} last ack"]
    for stream, topic, delivered, acked_at, pending, oldest in status.streams:
        oldest_text = "-" if oldest is None else f"{oldest:%Y-%m-%d %H:%M:%S} ({_ago(oldest, now)})"
        lines.append(f"{stream:<18} {topic:<18} {delivered:>10} {pending:>8}  "
                     f"{oldest_text:<28} {_ago(acked_at, now)}")
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

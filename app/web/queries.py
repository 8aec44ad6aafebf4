"""Every query the dashboard sends, and the snapshot the page shows.

The dashboard reads as metro_reader, through the dashboard_* views of sql/views.sql,
metro.bridge_lag() and the bridge's own tables. One snapshot is a fixed number of
indexed queries over time windows ending at now(); none scans card_events or the
whole history, and the lag of the streams and of the worker is counted up to
LAG_COUNT_LIMIT rows. `totals` (for /metrics) reads the rollup's lifetime counters.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from metro import config

READER_ROLE = "metro_reader"

# The views the dashboard needs; a missing one means the schema predates them
# (metro install upgrades it).
VIEWS = ("dashboard_seconds", "dashboard_stations", "dashboard_trains", "dashboard_fraud_feed",
         "dashboard_payments", "dashboard_totals")

NOW = "SELECT now() AS now, date_trunc('second', now()) AS second"
# The seconds before this one are complete: the rollup has counted every committed swipe
# stamped in them. It reads swipes in commit order, so the oldest it has not counted yet
# bounds them (a second the worker is still on would show a fraction of its swipes).
COMPLETE_BEFORE = ("date_trunc('second', least(now(), (SELECT l.oldest_pending"
                   " FROM metro.worker_lag(1) l WHERE l.source = 'card_events')))")
SECONDS = ("SELECT second_start, swipes, entries, accepted, rejected, fraud"
           f" FROM metro.dashboard_seconds WHERE second_start < {COMPLETE_BEFORE}"
           " ORDER BY second_start")
STATIONS = ("SELECT station_id, name, swipes, entries, accepted, rejected, fraud, departures,"
            " average_wait_seconds FROM metro.dashboard_stations ORDER BY station_id")
TRAINS = ("SELECT train_id, name, station_id, station_name, activity_type, ts"
          " FROM metro.dashboard_trains ORDER BY train_id")
FRAUD_FEED = ("SELECT position, trans_id, card_id, ts, station_id, station_name, activity_code,"
              " amount FROM metro.dashboard_fraud_feed ORDER BY position DESC")
PAYMENTS = "SELECT decided, approved, blocked FROM metro.dashboard_payments"
# The dashboard asks for the lag every second: it counts at most this many pending rows
# per stream and per source, so a stopped bridge or worker does not make each snapshot
# slower (counting took 9 ms per 100,000 rows; about 50 million would outlast the statement
# timeout).
# Beyond it, pending shows the limit and more_pending is true.
LAG_COUNT_LIMIT = 100_000
STREAMS = ("SELECT stream, topic, delivered, acked_at,"
           f" least(pending, {LAG_COUNT_LIMIT}) AS pending,"
           f" pending > {LAG_COUNT_LIMIT} AS more_pending,"
           " extract(epoch FROM now() - oldest_pending)::float8 AS lag_seconds"
           f" FROM metro.bridge_lag({LAG_COUNT_LIMIT}) ORDER BY stream")
INBOUND = ("SELECT topic, kafka_partition AS partition, next_offset, applied, dead_lettered,"
           " updated_at FROM metro.bridge_inbound_offsets ORDER BY topic, kafka_partition")
BRIDGE = ("SELECT holder, heartbeat_at,"
          " extract(epoch FROM now() - heartbeat_at)::float8 AS heartbeat_age_seconds,"
          " last_error, last_error_at FROM metro.bridge_state")
# How far the worker's rollup is behind each of its sources (metro.worker_lag()).
WORKER = (f"SELECT source, least(pending, {LAG_COUNT_LIMIT}) AS pending,"
          f" pending > {LAG_COUNT_LIMIT} AS more_pending,"
          " coalesce(extract(epoch FROM now() - oldest_pending), 0)::float8 AS lag_seconds"
          f" FROM metro.worker_lag({LAG_COUNT_LIMIT}) ORDER BY source")
# When a worker last renewed its lease, and when run_maintenance() last finished.
WORKER_STATE = ("SELECT extract(epoch FROM now() - heartbeat_at)::float8 AS heartbeat_age_seconds,"
                " extract(epoch FROM now() - last_maintenance_at)::float8"
                " AS maintenance_age_seconds FROM metro.worker_state")
TOTALS = ("SELECT swipes, entries, accepted, rejected, fraud, revenue, approved, blocked"
          " FROM metro.dashboard_totals")


class NotAReader(Exception):
    """The login role may not act as metro_reader."""


def read_as_reader(conn: psycopg.Connection) -> None:
    """Switch the session to metro_reader, so the dashboard can read nothing else.

    A login role that is metro_reader's member (or a superuser) may; any other is refused.
    """
    row = conn.execute("SELECT current_user, pg_has_role(current_user, %s, 'MEMBER')",
                       (READER_ROLE,)).fetchone()
    assert row is not None
    user, member = row
    if not member:
        raise NotAReader(f"role {user} is not a member of {READER_ROLE} "
                         f"(GRANT {READER_ROLE} TO {user})")
    conn.execute("SET ROLE metro_reader")


def check_views(conn: psycopg.Connection) -> list[str]:
    """The dashboard's views that the database lacks."""
    present = {row[0] for row in conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'metro' AND c.relname = ANY(%s)", (list(VIEWS),))}
    return [view for view in VIEWS if view not in present]


def line_order(path: Path | None = None) -> list[int]:
    """Station ids in line order, from data/line.csv (empty when the file is absent)."""
    source = path or config.DATA_DIR / "line.csv"
    try:
        with open(source, newline="") as handle:
            return [int(row["station_id"]) for row in csv.DictReader(handle)]
    except FileNotFoundError:
        return []


def _json(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


def _rows(conn: psycopg.Connection, query: str) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return [{key: _json(value) for key, value in row.items()}
                for row in cur.execute(query).fetchall()]


@dataclass(frozen=True)
class Layout:
    """What does not change between refreshes: the order of the line."""
    line: list[int]


def snapshot(conn: psycopg.Connection, layout: Layout) -> dict[str, Any]:
    """Everything the page shows, as JSON-ready values."""
    now = _rows(conn, NOW)[0]
    seconds = _rows(conn, SECONDS)
    stations = _rows(conn, STATIONS)
    order = {station_id: index for index, station_id in enumerate(layout.line)}
    # Stations of the line in its order, any others after them by number.
    stations.sort(key=lambda s: (order.get(s["station_id"], len(order)), s["station_id"]))
    trains = _rows(conn, TRAINS)
    fraud_feed = _rows(conn, FRAUD_FEED)
    payments = _rows(conn, PAYMENTS)[0]
    streams = _rows(conn, STREAMS)
    inbound = _rows(conn, INBOUND)
    bridge = _rows(conn, BRIDGE)[0]
    worker = _rows(conn, WORKER)

    last = seconds[-1] if seconds else {"swipes": 0, "entries": 0, "accepted": 0}
    minute = seconds[-60:]
    entries = sum(s["entries"] for s in minute)
    accepted = sum(s["accepted"] for s in minute)
    busiest = sorted((s for s in stations if s["swipes"] > 0),
                     key=lambda s: (-s["swipes"], s["station_id"]))
    # Rows written per stream: delivered plus pending (at least, beyond the count limit).
    written = {s["stream"]: s["delivered"] + s["pending"] for s in streams}
    more = {s["stream"]: s["more_pending"] for s in streams}
    return {
        "now": now["now"],
        "second": now["second"],
        "swipes_per_second": last["swipes"],
        "entries_per_second": last["entries"],
        "minute": {
            "swipes": sum(s["swipes"] for s in minute),
            "entries": entries,
            "accepted": accepted,
            "rejected": sum(s["rejected"] for s in minute),
            "fraud": sum(s["fraud"] for s in minute),
            "acceptance": round(accepted / entries, 4) if entries else None,
        },
        "seconds": [[s["second_start"], s["swipes"], s["entries"], s["fraud"]] for s in seconds],
        "fraud_total": written.get("fraud", 0),
        "fraud_total_more": more.get("fraud", False),
        "fraud_feed": fraud_feed,
        "stations": stations,
        "busiest": busiest[:8],
        "trains": trains,
        "streams": streams,
        "inbound": inbound,
        "dead_letters": sum(p["dead_lettered"] for p in inbound),
        "bridge": bridge,
        "worker": worker,
        "payments": {"minute": payments, "decided_total": written.get("transaction_decisions"),
                     "decided_total_more": more.get("transaction_decisions", False)},
    }


def totals(conn: psycopg.Connection) -> dict[str, Any]:
    """Totals for the Prometheus counters, the streams' lag and the inbound offsets."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(TOTALS).fetchone()
        assert row is not None
        streams = cur.execute(STREAMS).fetchall()
        inbound = cur.execute(INBOUND).fetchall()
        bridge = cur.execute(BRIDGE).fetchone()
        worker = cur.execute(WORKER).fetchall()
        worker_state = cur.execute(WORKER_STATE).fetchone()
        seconds = cur.execute(
            "SELECT swipes, entries, accepted FROM metro.dashboard_seconds"
            f" WHERE second_start < {COMPLETE_BEFORE} ORDER BY second_start DESC LIMIT 60"
            ).fetchall()
    return {"totals": dict(row), "streams": streams, "inbound": inbound, "bridge": bridge,
            "worker": worker, "worker_state": worker_state, "minute": seconds}

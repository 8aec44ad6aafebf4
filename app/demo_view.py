"""The demo's live view, read once a second from the views and the streams.

What it shows: swipes per second and the acceptance rate (views swipes_per_second
and acceptance_rate, for the last complete second), fraud found (fraud rows written
since the demo started), the busiest stations of the last minute (busiest_stations)
with their average wait for a train (dashboard_stations: departures of the last 15
minutes, as the dashboard shows it, not an earlier run's), and the bridge's lag
(metro.bridge_lag(): rows delivered since the start and rows still pending).

On a terminal the view is redrawn in place, every line fitted to the terminal's width
(long lines wrapped between words, tables sized to their content); otherwise it prints
one line per refresh, and never the same line twice.
"""

from __future__ import annotations

import shutil
import textwrap
import threading
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TextIO

import psycopg
from psycopg import sql

from metro.topics import streams

from .web.queries import COMPLETE_BEFORE

BUSIEST_SHOWN = 6


@dataclass(frozen=True)
class Baseline:
    """Where the streams stood when the demo started: later rows are the demo's."""
    started: datetime                 # database clock
    event_id: int                     # highest card_events.event_id
    positions: dict[str, int]         # highest position per stream table
    delivered: dict[str, int]         # bridge_cursors.delivered per stream table

    @staticmethod
    def take(conn: psycopg.Connection) -> Baseline:
        row = conn.execute("SELECT now(), (SELECT coalesce(max(event_id), 0)"
                           " FROM metro.card_events)").fetchone()
        assert row is not None
        positions = {stream.table: stream_rows(conn, stream.table, "max(position)", 0)
                     for stream in streams(conn)}
        delivered: dict[str, int] = dict(conn.execute(
            "SELECT stream, delivered FROM metro.bridge_lag()").fetchall())
        return Baseline(row[0], row[1], positions, delivered)

    def written(self, conn: psycopg.Connection, table: str) -> int:
        """Rows of a stream written since the baseline was taken."""
        return stream_rows(conn, table, "count(*)", self.positions[table])


def stream_rows(conn: psycopg.Connection, table: str, aggregate: str, after: int) -> int:
    """max(position) or count(*) of a stream's rows after a position."""
    row = conn.execute(sql.SQL("SELECT coalesce({}, 0) FROM {} WHERE position > %s").format(
        sql.SQL(aggregate), sql.Identifier("metro", table)), (after,)).fetchone()
    assert row is not None
    return int(row[0])


@dataclass(frozen=True)
class StreamLag:
    stream: str
    topic: str
    delivered: int                    # since the demo started
    pending: int
    oldest_pending_s: float | None    # age of the oldest pending row (event time)


@dataclass(frozen=True)
class Station:
    name: str
    swipes: int                       # last minute
    entries: int                      # last minute
    average_wait_s: Decimal | None    # departures of the last 15 minutes


@dataclass(frozen=True)
class Snapshot:
    elapsed: float                    # since the load began
    remaining: float                  # until the simulators stop (0 once they have)
    swipes: int                       # last complete second
    entries: int
    acceptance: Decimal | None        # last complete second
    run_acceptance: Decimal | None    # since the start
    fraud: int                        # fraud rows since the start
    last_fraud: str | None
    busiest: list[Station]
    lag: list[StreamLag]


def collect(conn: psycopg.Connection, baseline: Baseline, elapsed: float,
            remaining: float) -> Snapshot:
    second = conn.execute(
        "SELECT coalesce(s.swipes, 0), coalesce(s.entries, 0), a.rate"
        f" FROM (SELECT {COMPLETE_BEFORE} - interval '1 second' AS t) last"
        " LEFT JOIN metro.swipes_per_second s ON s.second_start = last.t"
        " LEFT JOIN metro.acceptance_rate a ON a.second_start = last.t").fetchone()
    run = conn.execute(
        "SELECT round(sum(accepted)::numeric / nullif(sum(entries), 0), 4)"
        " FROM metro.acceptance_rate WHERE second_start >= date_trunc('second', %s::timestamptz)",
        (baseline.started,)).fetchone()
    fraud = conn.execute(
        "SELECT count(*), (SELECT format('card %%s at %%s', f.card_id, st.name)"
        "   FROM metro.fraud f JOIN metro.stations st USING (station_id)"
        "   WHERE f.position > %(after)s ORDER BY f.position DESC LIMIT 1)"
        " FROM metro.fraud WHERE position > %(after)s",
        {"after": baseline.positions["fraud"]}).fetchone()
    busiest = [Station(*row) for row in conn.execute(
        "SELECT b.name, b.swipes, b.entries, w.average_wait_seconds"
        " FROM metro.busiest_stations b"
        " LEFT JOIN metro.dashboard_stations w USING (station_id)"
        " ORDER BY b.swipes DESC, b.station_id LIMIT %s", (BUSIEST_SHOWN,))]
    lag = [StreamLag(stream, topic, delivered - baseline.delivered.get(stream, 0), pending,
                     age.total_seconds() if age is not None else None)
           for stream, topic, delivered, pending, age in conn.execute(
               "SELECT stream, topic, delivered, pending, now() - oldest_pending"
               " FROM metro.bridge_lag()")]
    assert second is not None and run is not None and fraud is not None
    return Snapshot(elapsed, remaining, second[0], second[1], second[2], run[0], fraud[0],
                    fraud[1], busiest, lag)


def percent(rate: Decimal | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"


def seconds(value: Decimal | float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def clock(s: Snapshot) -> str:
    """`12 s, 48 s left`: time since the load began and until it stops."""
    left = f"{s.remaining:.0f} s left" if s.remaining > 0 else "load stopped"
    return f"{s.elapsed:.0f} s, {left}"


def table(header: list[str], rows: list[list[str]], indent: str = "") -> list[str]:
    """Columns as wide as their content: the first left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [indent + "  ".join([row[0].ljust(widths[0]),
                                *(cell.rjust(width) for cell, width in zip(row[1:], widths[1:],
                                                                           strict=True))])
            for row in [header, *rows]]


def frame(snapshot: Snapshot, title: str, notes: list[str], footer: str) -> list[str]:
    """The terminal view, before fitting to the width."""
    s = snapshot
    lines = [title, f"elapsed {clock(s)}",
             f"swipes/s {s.swipes:>5}   entries/s {s.entries:>5}   accepted "
             f"{percent(s.acceptance):>6} last second, {percent(s.run_acceptance)} run",
             f"fraud found {s.fraud:>5}" + (f"   latest: {s.last_fraud}" if s.last_fraud else ""),
             ""]
    if s.busiest:
        lines += table(["busiest stations, last minute", "swipes", "entries", "average wait"],
                       [[st.name, str(st.swipes), str(st.entries), seconds(st.average_wait_s)]
                        for st in s.busiest])
    else:
        lines.append("busiest stations: no swipes in the last minute")
    lines.append("")
    lines += table(["bridge to topic", "delivered", "pending", "oldest pending"],
                   [[lag.topic, str(lag.delivered), str(lag.pending),
                     seconds(lag.oldest_pending_s)] for lag in s.lag])
    return lines + ["", *notes[-2:], footer]


def fit(lines: list[str], width: int) -> list[str]:
    """Every line within `width` columns: long ones wrapped between words (continuations
    indented), a word longer than the width cut with an ellipsis."""
    fitted: list[str] = []
    for text in lines:
        if len(text) <= width:
            fitted.append(text)
            continue
        for part in textwrap.wrap(text, width=width, subsequent_indent="    ",
                                  break_on_hyphens=False) or [""]:
            fitted.append(part if len(part) <= width else part[:width - 1] + "\u2026")
    return fitted


def line(snapshot: Snapshot) -> str:
    """One refresh as a plain line, for logs and pipes."""
    s = snapshot
    busiest = (f"{s.busiest[0].name} {s.busiest[0].swipes}" if s.busiest else "-")
    waits = [st.average_wait_s for st in s.busiest if st.average_wait_s is not None]
    wait = seconds(sum(waits) / len(waits)) if waits else "-"
    pending = sum(lag.pending for lag in s.lag)
    delivered = sum(lag.delivered for lag in s.lag)
    return (f"[{clock(s)}] {s.swipes} swipes/s, acceptance {percent(s.acceptance)}, "
            f"fraud {s.fraud}, busiest {busiest} (last minute), average wait {wait}, "
            f"bridge delivered {delivered} pending {pending}")


class Screen:
    """Where the view goes: redrawn in place on a terminal, appended lines otherwise.
    Notes (the bridge's messages) may come from other threads."""

    RUNNING = "Ctrl-C stops the demo and prints the summary"

    def __init__(self, output: TextIO, title: str, width: int | None = None) -> None:
        self.output = output
        self.title = title
        self.tty = output.isatty()
        self.width = width              # None: the terminal's, at each redraw
        self.footer = self.RUNNING
        self.notes: list[str] = []
        self._drawn = 0
        self._last_line: str | None = None
        self._lock = threading.Lock()

    def note(self, message: str) -> None:
        with self._lock:
            self.notes.append(message)
            if not self.tty:
                self.output.write(message + "\n")
                self.output.flush()

    def render(self, snapshot: Snapshot) -> list[str]:
        """The lines of one terminal frame, fitted to the width."""
        width = self.width or shutil.get_terminal_size().columns
        return fit(frame(snapshot, self.title, self.notes, self.footer), max(20, width))

    def show(self, snapshot: Snapshot) -> None:
        with self._lock:
            if not self.tty:
                text = line(snapshot)
                if text == self._last_line:
                    return  # nothing new since the last line
                self._last_line = text
                self.output.write(text + "\n")
            else:
                lines = self.render(snapshot)
                # Back to the top of the previous frame, clear to the end, draw. Every line
                # fits the width, so the frame's height is its number of lines.
                up = f"\x1b[{self._drawn}F" if self._drawn else ""
                self.output.write(up + "\x1b[J" + "\n".join(lines) + "\n")
                self._drawn = len(lines)
            self.output.flush()

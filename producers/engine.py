"""The open-loop run: send every event at its scheduled time, whatever the answers do.

A call that cannot be sent on time (the producer or the database is behind) is
sent late and its latency counts from the scheduled time. Live statistics print
every display interval, each line about that interval only. Ctrl-C stops sending;
calls in flight get `grace` seconds to finish (a second Ctrl-C gives up at once)
and the rest count as errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .events import Event, Outcome
from .simulation import Simulation
from .sinks import Sink
from .stats import Stats

BATCH = 500                # events sent before the loop lets results in
IDLE_SLEEP = 0.05          # longest sleep before looking at Ctrl-C again
CATCH_UP_SECONDS = 5.0     # how long past the end a late producer may keep sending


@dataclass
class RunResult:
    summary: dict[str, Any]
    interrupted: bool


class Run:
    def __init__(self, simulation: Simulation, sink: Sink, *, display_interval: float,
                 print_line: Callable[[str], None] = print, grace: float = 5.0,
                 published: bool = False) -> None:
        """published: the sink publishes to Kafka, so an answer means published, not
        accepted."""
        self.simulation = simulation
        self.sink = sink
        self.display_interval = display_interval
        self.print_line = print_line
        self.grace = grace
        self.stats = Stats(simulation.target_rate, simulation.target_label, published=published)
        self.stopping = False
        self.hurry = False
        self.start = 0.0
        self._rolled = 0.0  # when the last interval ended, monotonic

    def interrupt(self) -> None:
        if self.stopping:
            self.hurry = True
        self.stopping = True

    def _done(self, event: Event, outcome: Outcome, finished: float) -> None:
        targeted = self.simulation.counts_toward_target(event)
        self.stats.completed(event, outcome, finished - self.start - event.due, targeted)
        self.simulation.completed(event, outcome)

    async def _send(self) -> None:
        timeline, sink, stats = self.simulation.timeline, self.sink, self.stats
        # A simulation may settle an event just before it is sent, or skip it (riders
        # choose a card then, when they know who is on board).
        prepare: Callable[[Event], bool] | None = getattr(self.simulation, "prepare", None)
        while not self.stopping:
            due = timeline.next_due()
            now = time.monotonic() - self.start
            if due is None:
                if not sink.in_flight():
                    return  # nothing left, and no answer can schedule more
                await asyncio.sleep(0.001)
                continue
            if now > timeline.horizon + CATCH_UP_SECONDS:
                while timeline.next_due() is not None:
                    timeline.pop()
                    stats.unsent += 1
                return
            if due > now:
                await asyncio.sleep(min(due - now, IDLE_SLEEP))
                continue
            sent = 0
            while sent < BATCH and due is not None and due <= now and sink.has_room():
                event = timeline.pop()
                due = timeline.next_due()
                if prepare is not None and not prepare(event):
                    continue  # the simulation skips it (and counts it)
                stats.sent(now - event.due)
                sink.submit(event, self._done)
                sent += 1
            sink.flush()
            # Let results in; when the sink is full this is where the lag grows.
            await asyncio.sleep(0 if sent else 0.001)

    async def _display(self) -> None:
        while True:
            await asyncio.sleep(self.display_interval)
            now = time.monotonic()
            self.print_line(self.stats.roll(now - self._rolled, now - self.start))
            self._rolled = now

    async def run(self) -> RunResult:
        loop = asyncio.get_running_loop()
        await self.sink.start()
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
            loop.add_signal_handler(signal.SIGINT, self.interrupt)
        self.start = self._rolled = time.monotonic()
        self.simulation.clock_starts()
        display = loop.create_task(self._display())
        try:
            await self._send()
            deadline = time.monotonic() + self.grace
            while self.sink.in_flight() and time.monotonic() < deadline and not self.hurry:
                await asyncio.sleep(0.01)
        finally:
            # Also when the sink stopped the run: what it still has in flight is told.
            await self.sink.close()
            display.cancel()
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGINT)
        finished = time.monotonic()
        elapsed = finished - self.start
        self.stats.roll(finished - self._rolled, elapsed)  # the last, partial interval
        self.stats.skipped = getattr(self.simulation, "skipped", 0)
        return RunResult(self.stats.summary(elapsed), interrupted=self.stopping)

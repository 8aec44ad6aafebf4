"""Pending events in send order: steady streams merged lazily, plus one-off events
(an exit scheduled when an entry is accepted). Nothing is kept beyond the horizon.
A stream's first event is drawn when the run first asks, so that it is stamped on the
run's clock (Simulation.clock_starts), not when the simulation was built."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator

from .events import Event


class Timeline:
    def __init__(self, horizon: float) -> None:
        self.horizon = horizon  # events due at or after this many seconds are never sent
        self._heap: list[tuple[float, int, Event, Iterator[Event] | None]] = []
        self._order = itertools.count()
        self._unstarted: list[Iterator[Event]] = []

    def add_stream(self, stream: Iterator[Event]) -> None:
        """A stream yields events in due order; only its next event is held."""
        self._unstarted.append(stream)

    def _start_streams(self) -> None:
        while self._unstarted:
            self._push_next(self._unstarted.pop(0))

    def add(self, event: Event) -> None:
        if event.due >= self.horizon:
            return
        heapq.heappush(self._heap, (event.due, next(self._order), event, None))

    def next_due(self) -> float | None:
        self._start_streams()
        return self._heap[0][0] if self._heap else None

    def pop(self) -> Event:
        self._start_streams()
        _, _, event, stream = heapq.heappop(self._heap)
        if stream is not None:
            self._push_next(stream)
        return event

    def _push_next(self, stream: Iterator[Event]) -> None:
        event = next(stream, None)
        if event is not None and event.due < self.horizon:
            heapq.heappush(self._heap, (event.due, next(self._order), event, stream))


def steady(rate: float, start: float = 0.0) -> Iterator[float]:
    """Send times of an open-loop stream at a fixed rate: start, start + 1/rate, ..."""
    for n in itertools.count():
        yield start + n / rate

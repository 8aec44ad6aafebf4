"""What the run loop needs from a simulator: a timeline of events and a place for feedback."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from .events import Event, Outcome
from .timeline import Timeline

# start_ts of a simulation stamped on the real clock: its second 0 is when the run
# starts, not when it was built (reading cards and connecting take a second or more,
# and every timestamp would lag the swipe it stamps by that much).
REAL_CLOCK = None


class Simulation:
    """Base of the simulators: events are scheduled on `timeline` in wall-clock seconds
    after the start and stamped from `start_ts` (REAL_CLOCK: the time the run starts);
    `speedup` shortens the simulated durations (travel, dwell, rides), never moving a
    timestamp ahead of now."""

    name = "simulation"
    target_rate: float | None = None  # offered rate of the main stream, events per second
    target_label = "calls"            # what target_rate counts

    def __init__(self, start_ts: datetime | None, horizon: float, speedup: float = 1.0) -> None:
        if speedup <= 0:
            raise ValueError("speedup must be positive")
        self.real_clock = start_ts is REAL_CLOCK
        self.start_ts = datetime.now(UTC) if start_ts is None else start_ts
        self.speedup = speedup
        self.timeline = Timeline(horizon)

    def clock_starts(self) -> None:
        """The run's second 0 is now (the timeline draws no event before it)."""
        if self.real_clock:
            self.start_ts = datetime.now(UTC)

    def sim_ts(self, due: float) -> datetime:
        return self.start_ts + timedelta(seconds=due)

    def counts_toward_target(self, event: Event) -> bool:
        """Whether the event belongs to the stream that target_rate describes."""
        return True

    def completed(self, event: Event, outcome: Outcome) -> None:
        """Called once per sent event with its outcome; may schedule follow-up events."""

    def describe(self) -> str:
        """One line saying what the simulation will send."""
        raise NotImplementedError

    def summary_lines(self) -> list[str]:
        return []

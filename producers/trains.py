"""Trains running up and down the line: arrive, dwell, depart, travel, reverse at the ends."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from .events import TrainMove
from .line import Line
from .simulation import Simulation

ARRIVAL, DEPARTURE = 0, 1


def movements(line: Line) -> Iterator[tuple[int, int, int]]:
    """(seconds, station_id, activity) of one train forever, arriving at the first
    station at second 0."""
    last = len(line.stations) - 1
    seconds, position, step = 0, 0, 1
    while True:
        yield seconds, line.stations[position], ARRIVAL
        seconds += line.dwell[position]
        yield seconds, line.stations[position], DEPARTURE
        if not 0 <= position + step <= last:
            step = -step
        seconds += line.travel[min(position, position + step)]
        position += step


def round_trip_seconds(line: Line) -> int:
    """One full cycle: every run twice, the ends' dwell once, the others' twice."""
    return 2 * sum(line.travel) + 2 * sum(line.dwell) - line.dwell[0] - line.dwell[-1]


class Trains(Simulation):
    name = "trains"
    target_label = "train events"

    def __init__(self, trains: list[int], line: Line, start_ts: datetime | None, horizon: float,
                 speedup: float = 1.0) -> None:
        super().__init__(start_ts, horizon, speedup)
        self.line = line
        self.trains = trains
        cycle = round_trip_seconds(line)
        # Trains are spread evenly over the cycle, whole seconds apart.
        for index, train in enumerate(trains):
            self.timeline.add_stream(self._train(train, round(index * cycle / len(trains))))

    def describe(self) -> str:
        return (f"{len(self.trains)} trains on {len(self.line.stations)} stations, "
                f"speedup {self.speedup:g}x")

    def _train(self, train_id: int, phase: int) -> Iterator[TrainMove]:
        for seconds, station, activity in movements(self.line):
            if seconds >= phase:
                due = (seconds - phase) / self.speedup
                yield TrainMove(due, self.sim_ts(due), train_id, station, activity)

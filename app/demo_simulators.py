"""The demo's trains, riders and recharges: the producers' simulators and open-loop run,
together in one asyncio loop on a thread of their own, calling the functions directly.

The simulated clock is the wall clock (the views' "last minute" is the real one),
but the line runs TIME_SCALE times faster than data/line.csv: trips end and trains
depart within a one-minute demo.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import psycopg

from ..producers import line, reference
from ..producers.engine import Run, RunResult
from ..producers.recharges import Recharges
from ..producers.riders import Riders
from ..producers.simulation import Simulation
from ..producers.sinks import DirectSink
from ..producers.trains import Trains

TIME_SCALE = 20
TRAINS = 8                  # trains 1..8 of data/trains.csv
FRAUD_RATIO = 0.02          # share of entries made by cloned cards
RECHARGES_PER_ENTRY = 1 / 30
CONNECTIONS = {"riders": 2, "trains": 1, "recharges": 1}


def demo_line(timing: line.Line) -> line.Line:
    """The line with its travel and dwell times divided by TIME_SCALE, a second at least."""
    def scaled(values: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(max(1, round(value / TIME_SCALE)) for value in values)
    return replace(timing, travel=scaled(timing.travel), dwell=scaled(timing.dwell))


def build(conn: psycopg.Connection, *, rate: float, seconds: float,
          cards: int) -> list[Simulation]:
    """Trains, riders at `rate` entries per second and recharges, for `seconds`, over the
    first `cards` cards; checked against the database's stations, trains and cards."""
    timing = demo_line(line.load_line())
    reference.check_line_stations(conn, timing.stations)
    stations = reference.load_stations(conn)
    for station in stations.items:
        timing.position(station)  # riders ride the line: every station must be on it
    card_ids = reference.load_cards(conn, cards)
    trains = reference.check_trains(conn, TRAINS)
    rng = random.Random()
    now = datetime.now(UTC)
    return [
        Trains(trains, timing, now, seconds),
        Riders(rate=rate, cards=card_ids, stations=stations, line=timing, start_ts=now,
               horizon=seconds, rng=rng, fraud_ratio=FRAUD_RATIO),
        Recharges(rate=rate * RECHARGES_PER_ENTRY, cards=card_ids, stations=stations,
                  start_ts=now, horizon=seconds, rng=rng),
    ]


class Simulators:
    """Runs the simulations until their horizon or until stopped; `report` gets the
    sinks' one-line messages (a lost connection...)."""

    def __init__(self, dsn: str, simulations: list[Simulation],
                 report: Callable[[str], None]) -> None:
        self.runs = [Run(simulation,
                         DirectSink(dsn, connections=CONNECTIONS.get(simulation.name, 1),
                                    report=report),
                         display_interval=1.0, print_line=lambda _: None)
                     for simulation in simulations]
        self.results: list[RunResult] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name="metro-demo-simulators")

    def start(self) -> None:
        self.thread.start()

    def running(self) -> bool:
        return self.thread.is_alive()

    def stop(self) -> None:
        """Stop sending; calls in flight get the run's grace period. Called again: give up
        on them. (Run.interrupt only sets flags that the loop reads: safe from here.)"""
        for run in self.runs:
            run.interrupt()

    def join(self, timeout: float) -> list[RunResult]:
        """The runs' results; raises what stopped the loop, if anything did."""
        self.thread.join(timeout)
        if self.error is not None:
            raise self.error
        return self.results

    def _main(self) -> None:
        try:
            self.results = asyncio.run(self._all())
        except BaseException as error:  # handed to the main thread by join()
            self.error = error

    async def _all(self) -> list[RunResult]:
        return list(await asyncio.gather(*(run.run() for run in self.runs)))

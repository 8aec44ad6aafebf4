"""The demo's trains, riders and recharges: the producers' simulators and open-loop run,
together in one asyncio loop on a thread of their own, calling the functions directly.

The clock is the real one (the views' "last minute" is the real one, and no event is
dated ahead of now()), but the line runs TIME_SCALE times faster than data/line.csv:
trains run it with its travel and dwell times divided by TIME_SCALE, and riders' rides
are TIME_SCALE times shorter (their --speedup), so trips end within a one-minute demo.
Honest riders never trip a fraud rule (producers.riders): fraud comes from the cloned
cards alone.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Callable
from dataclasses import replace

import psycopg

from ..producers import line, reference
from ..producers.engine import Run, RunResult
from ..producers.recharges import Recharges
from ..producers.riders import FraudRules, Riders, recent_history
from ..producers.simulation import REAL_CLOCK, Simulation
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
    rules = FraudRules.read(conn)
    rng = random.Random()
    return [
        Trains(trains, timing, REAL_CLOCK, seconds),
        Riders(rate=rate, cards=card_ids, stations=stations, line=line.load_line(),
               start_ts=REAL_CLOCK, horizon=seconds, rng=rng, speedup=TIME_SCALE,
               fraud_ratio=FRAUD_RATIO, rules=rules,
               history=recent_history(conn, card_ids.ids, rules)),
        Recharges(rate=rate * RECHARGES_PER_ENTRY, cards=card_ids, stations=stations,
                  start_ts=REAL_CLOCK, horizon=seconds, rng=rng),
    ]


def describe(simulation: Simulation) -> str:
    """What a simulation sends, in the demo's terms."""
    if isinstance(simulation, Trains):
        return (f"{len(simulation.trains)} trains on {len(simulation.line.stations)} stations, "
                f"running the line {TIME_SCALE}x faster than data/line.csv (on the real clock)")
    if isinstance(simulation, Recharges):
        return (f"{simulation.target_rate or 0:.3g} recharges/s (one per "
                f"{1 / RECHARGES_PER_ENTRY:g} entries) over {len(simulation.cards)} cards")
    return simulation.describe()


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

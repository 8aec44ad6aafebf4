"""Ticket machines: recharges of random cards at stations drawn by weight, at a steady rate."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime

from .events import Event, Recharge
from .reference import Cards, WeightedChoice
from .simulation import Simulation
from .timeline import steady

# (cents, weight): most riders top up 10.00 or 20.00, a few 5.00 or 50.00.
AMOUNTS = ((500, 2), (1000, 4), (2000, 3), (5000, 1))


class Recharges(Simulation):
    name = "recharges"
    target_label = "recharges"

    def __init__(self, *, rate: float, cards: Cards, stations: WeightedChoice,
                 start_ts: datetime | None, horizon: float, rng: random.Random) -> None:
        super().__init__(start_ts, horizon)
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.target_rate = rate
        self.cards = cards.ids
        self.stations = stations
        self.rng = rng
        self.amounts = WeightedChoice([cents for cents, _ in AMOUNTS],
                                      [weight for _, weight in AMOUNTS])
        self.timeline.add_stream(self._recharges(rate))

    def describe(self) -> str:
        return f"{self.target_rate:g} recharges/s over {len(self.cards)} cards"

    def _recharges(self, rate: float) -> Iterator[Event]:
        for due in steady(rate):
            yield Recharge(due, self.sim_ts(due), self.rng.choice(self.cards),
                           self.amounts.draw(self.rng), self.stations.draw(self.rng))

"""Riders at the turnstiles: entries at a steady rate, an exit after the ride for every
accepted entry, a small share of unknown cards, and cloned cards for the fraud rules.

Honest riders take cards in a shuffled rotation, skipping cards whose rider is still
on board, so a card is reused only after every other card was. The fraud rules then
stay quiet for honest riders while rate * 3600 / cards stays under 10 entries per
card per hour (simulated).

A cloned card is a burst of CLONE_BURST entries at distinct stations, CLONE_SPACING
simulated seconds apart: swipes fall in the same second (rule 1) and the sixth sees
five stations in the last hour (rule 2). Clones use enabled cards set aside for them,
because a disabled card is refused before the fraud rules run.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from datetime import datetime, timedelta

from .events import Entry, Event, Exit, Outcome, Result
from .line import Line
from .reference import Cards, WeightedChoice
from .simulation import Simulation
from .timeline import steady

UNKNOWN_SHARE = 0.005   # share of honest swipes made with a card the database does not know
CLONE_BURST = 6
CLONE_SPACING = 0.4     # simulated seconds between the swipes of one burst


class Riders(Simulation):
    name = "riders"
    target_label = "entries"

    def __init__(self, *, rate: float, cards: Cards, stations: WeightedChoice, line: Line,
                 start_ts: datetime, horizon: float, rng: random.Random, speedup: float = 1.0,
                 fraud_ratio: float = 0.0, unknown_share: float = UNKNOWN_SHARE) -> None:
        super().__init__(start_ts, horizon, speedup)
        if rate <= 0:
            raise ValueError("rate must be positive")
        if not 0 <= fraud_ratio < 1 or not 0 <= unknown_share < 1:
            raise ValueError("fraud ratio and unknown share must be in [0, 1)")
        self.target_rate = rate
        self.stations = stations
        self.line = line
        self.rng = rng
        self.unknown_share = unknown_share
        self.riding: set[int] = set()
        self.unknown_swipes = 0
        self.bursts = 0
        self._unknown_base = cards.unknown_from
        clones = self._set_aside_clones(cards, fraud_ratio)
        set_aside = set(clones)
        honest = [card for card in cards.ids if card not in set_aside]
        if not honest:
            raise ValueError("no cards left for honest riders: load more cards")
        rng.shuffle(honest)
        self._honest = honest
        self.clones = clones
        self.fraud_ratio = fraud_ratio
        self._next_honest = 0
        self.timeline.add_stream(self._honest_entries(rate * (1 - fraud_ratio)))
        if clones:
            self.timeline.add_stream(
                self._clone_bursts(rate * fraud_ratio, itertools.cycle(clones)))

    def _set_aside_clones(self, cards: Cards, fraud_ratio: float) -> list[int]:
        if fraud_ratio == 0:
            return []
        if not cards.enabled:
            raise ValueError("cloned cards need enabled cards, and none is loaded")
        count = min(len(cards.enabled), max(1, round(len(cards.ids) * fraud_ratio)))
        return self.rng.sample(cards.enabled, count)

    def _honest_card(self) -> int:
        if self.rng.random() < self.unknown_share:
            self.unknown_swipes += 1
            return self._unknown_base + self.rng.randrange(1_000_000_000)
        size = len(self._honest)
        for _ in range(size):
            card = self._honest[self._next_honest]
            self._next_honest = (self._next_honest + 1) % size
            if card not in self.riding:
                return card
        return card  # everyone is on board: reuse the card anyway

    def _honest_entries(self, rate: float) -> Iterator[Event]:
        for due in steady(rate):
            yield Entry(due, self.sim_ts(due), self._honest_card(), self.stations.draw(self.rng))

    def _clone_bursts(self, rate: float, clones: Iterator[int]) -> Iterator[Event]:
        stations = self.stations.items
        for start in steady(rate / CLONE_BURST):
            if start >= self.timeline.horizon:
                return
            card = next(clones)
            self.bursts += 1
            places = (self.rng.sample(stations, CLONE_BURST) if len(stations) >= CLONE_BURST
                      else [self.rng.choice(stations) for _ in range(CLONE_BURST)])
            for number, station in enumerate(places[1:], start=1):
                due = start + number * CLONE_SPACING / self.speedup
                self.timeline.add(Entry(due, self.sim_ts(due), card, station))
            yield Entry(start, self.sim_ts(start), card, places[0])

    def describe(self) -> str:
        return (f"{self.target_rate:g} entries/s, speedup {self.speedup:g}x, "
                f"{len(self._honest)} cards for riders and {len(self.clones)} cloned, "
                f"fraud ratio {self.fraud_ratio:g}, unknown-card share {self.unknown_share:g}")

    def counts_toward_target(self, event: Event) -> bool:
        return isinstance(event, Entry)

    def _destination(self, origin: int) -> int:
        for _ in range(100):
            station = self.stations.draw(self.rng)
            if station != origin:
                return station
        position = self.line.position(origin)
        return self.line.stations[position - 1 if position else 1]

    def completed(self, event: Event, outcome: Outcome) -> None:
        if isinstance(event, Exit):
            self.riding.discard(event.card_id)
        elif isinstance(event, Entry) and outcome.result is Result.ACCEPTED:
            destination = self._destination(event.station_id)
            ride = self.line.ride_seconds(event.station_id, destination)
            self.riding.add(event.card_id)
            self.timeline.add(Exit(event.due + ride / self.speedup,
                                   event.ts + timedelta(seconds=ride), event.card_id, destination))

    def summary_lines(self) -> list[str]:
        return [f"cloned-card bursts: {self.bursts} of {CLONE_BURST} entries; "
                f"unknown-card swipes: {self.unknown_swipes}",
                f"riders still on board at the end: {len(self.riding)} "
                "(their exits fall after the end of the run)"]

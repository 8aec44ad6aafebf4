"""Riders at the turnstiles: entries at a steady rate, an exit after the ride for every
accepted entry, a small share of unknown cards, and cloned cards for the fraud rules.

Only cloned cards are fraud. Honest riders take the least recently used card that no
fraud rule would flag (the thresholds of metro.settings, FraudRules): not on board,
no gate swipe in the same second, and fewer entries in the fraud window than it takes
to trip rule 2 or 3 (5 an hour by default), counting the entries already in the
database. When no card qualifies the entry is skipped and counted, and a run whose
cards cannot carry its rate says so before it starts (Riders.warnings).

The clock is the real one: event timestamps never run ahead of now(). `speedup`
shortens rides (the line's travel and dwell times divided by it, a second at least),
so a short run sees exits.

A cloned card is a burst of CLONE_BURST entries at distinct stations, CLONE_SPACING
seconds apart: swipes fall in the same second (rule 1) and the sixth sees five
stations in the last hour (rule 2). Clones use enabled cards set aside for them,
because a disabled card is refused before the fraud rules run.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import psycopg

from .events import Entry, Event, Exit, Outcome, Result
from .line import Line
from .reference import Cards, WeightedChoice
from .simulation import Simulation
from .timeline import steady

UNKNOWN_SHARE = 0.005   # share of honest swipes made with a card the database does not know
CLONE_BURST = 6
CLONE_SPACING = 0.4     # seconds between the swipes of one burst
MIN_RIDE = 1.0          # seconds: an exit never falls in its entry's second (rule 1)
MARGIN = 0.001          # seconds kept clear of a fraud window's edge
POOLED = -1             # card_id of an entry whose card is drawn from the pool when sent


@dataclass(frozen=True)
class FraudRules:
    """The fraud rules' thresholds (metro.settings), as far as riders need them."""
    window: float = 3600.0      # seconds: entries in [ts - window, ts) count
    station_limit: int = 5      # rule 2: fraud at this many distinct stations in the window
    entry_limit: int = 10       # rule 3: fraud at this many entries in the window

    @property
    def allowance(self) -> int:
        """Entries a card may make within one window without tripping rule 2 or 3, whatever
        its stations: the next one would see `station_limit` stations or `entry_limit`
        entries before it."""
        return min(self.station_limit, self.entry_limit)

    @staticmethod
    def read(conn: psycopg.Connection) -> FraudRules:
        row = conn.execute("SELECT extract(epoch FROM fraud_window), fraud_station_limit,"
                           " fraud_entry_limit FROM metro.settings").fetchone()
        assert row is not None
        return FraudRules(float(row[0]), row[1], row[2])


@dataclass
class CardHistory:
    """A card's recent gate swipes, as epoch seconds."""
    entries: deque[float] = field(default_factory=deque)   # within the window, in order
    last_swipe: float = -math.inf                           # last entry or exit


def recent_history(conn: psycopg.Connection, cards: Sequence[int],
                   rules: FraudRules) -> dict[int, CardHistory]:
    """The entries and gate swipes the database already holds for these cards within the
    fraud window (a run started right after another must not trip the rules either)."""
    history: dict[int, CardHistory] = {}
    for card, entries, last in conn.execute(
            "SELECT card_id, array_agg(extract(epoch FROM ts)::float8 ORDER BY ts)"
            "   FILTER (WHERE activity_code = 1),"
            " extract(epoch FROM max(ts))::float8"
            " FROM metro.card_events"
            " WHERE ts >= now() - make_interval(secs => %s) AND activity_code IN (1, -1)"
            "   AND card_id = ANY(%s)"
            " GROUP BY card_id", (rules.window, list(cards))):
        history[card] = CardHistory(deque(entries or ()), last)
    return history


class CardPool:
    """Honest riders' cards, least recently used first; a card is handed out only when an
    entry with it at time `t` trips no fraud rule, and is out until `release`."""

    def __init__(self, cards: list[int], rules: FraudRules,
                 history: dict[int, CardHistory] | None = None) -> None:
        self.rules = rules
        self.history = history or {}
        self.idle: deque[int] = deque(cards)
        self.cooling: list[tuple[float, int]] = []  # (ready at, card)
        self.size = len(cards)

    def ready_at(self, card: int, t: float) -> float:
        """The earliest time from `t` on at which the card may enter."""
        known = self.history.get(card)
        if known is None:
            return t
        entries, window = known.entries, self.rules.window
        while entries and entries[0] < t - window:
            entries.popleft()
        ready = max(t, math.floor(known.last_swipe) + 1.0)  # rule 1: another second
        allowance = self.rules.allowance
        if len(entries) >= allowance:
            ready = max(ready, entries[-allowance] + window + MARGIN)
        return ready

    def draw(self, t: float) -> int | None:
        """A card for an entry at epoch second `t`, or None when every card is on board,
        in use, or would trip a rule."""
        while self.cooling and self.cooling[0][0] <= t:
            self.idle.append(heapq.heappop(self.cooling)[1])
        while self.idle:
            card = self.idle.popleft()
            ready = self.ready_at(card, t)
            if ready <= t:
                known = self.history.setdefault(card, CardHistory())
                known.entries.append(t)
                known.last_swipe = t
                return card
            heapq.heappush(self.cooling, (ready, card))
        return None

    def release(self, card: int, swipe: float) -> None:
        """The card's rider left the system at epoch second `swipe` (exit, or refused)."""
        known = self.history.setdefault(card, CardHistory())
        known.last_swipe = max(known.last_swipe, swipe)
        self.idle.append(card)

    def capacity(self, t: float) -> int:
        """Entries the cards can still make within one window from `t`."""
        allowance = self.rules.allowance
        used = sum(min(allowance, sum(1 for e in known.entries if e >= t - self.rules.window))
                   for card, known in self.history.items())
        return self.size * allowance - used


class Riders(Simulation):
    name = "riders"
    target_label = "entries"

    def __init__(self, *, rate: float, cards: Cards, stations: WeightedChoice, line: Line,
                 start_ts: datetime | None, horizon: float, rng: random.Random,
                 speedup: float = 1.0,
                 fraud_ratio: float = 0.0, unknown_share: float = UNKNOWN_SHARE,
                 rules: FraudRules | None = None,
                 history: dict[int, CardHistory] | None = None) -> None:
        """rules: the database's fraud thresholds (FraudRules.read); history: the cards'
        recent swipes (recent_history)."""
        super().__init__(start_ts, horizon, speedup)
        if rate <= 0:
            raise ValueError("rate must be positive")
        if not 0 <= fraud_ratio < 1 or not 0 <= unknown_share < 1:
            raise ValueError("fraud ratio and unknown share must be in [0, 1)")
        self.target_rate = self.rate = rate
        self.stations = stations
        self.line = line
        self.rng = rng
        self.unknown_share = unknown_share
        self.rules = rules or FraudRules()
        self.riding: set[int] = set()
        self.unknown_swipes = 0
        self.skipped = 0
        self.bursts = 0
        self._unknown_base = cards.unknown_from
        clones = self._set_aside_clones(cards, fraud_ratio)
        set_aside = set(clones)
        honest = [card for card in cards.ids if card not in set_aside]
        if not honest:
            raise ValueError("no cards left for honest riders: load more cards")
        rng.shuffle(honest)
        self._honest = honest
        self.pool = CardPool(honest, self.rules, history)
        self._pooled = set(honest)
        self._capacity = self.pool.capacity(self.start_ts.timestamp())
        self.clones = clones
        self.fraud_ratio = fraud_ratio
        self.timeline.add_stream(self._honest_entries(rate * (1 - fraud_ratio)))
        if clones:
            self.timeline.add_stream(
                self._clone_bursts(rate * fraud_ratio, itertools.cycle(clones)))

    def ride(self, origin: int, destination: int) -> float:
        """Seconds on board: the line's time divided by the speed-up, a second at least."""
        return max(MIN_RIDE, self.line.ride_seconds(origin, destination) / self.speedup)

    def warnings(self) -> list[str]:
        """What the rider should know before the run: too few cards for the rate."""
        honest_rate = self.rate * (1 - self.fraud_ratio) * (1 - self.unknown_share)
        span = min(self.timeline.horizon, self.rules.window)
        needed = math.ceil(honest_rate * span)
        capacity = self._capacity
        if needed <= capacity:
            return []
        allowance = self.rules.allowance
        cards = math.ceil(needed / allowance) + len(self.clones)
        over = ("the run" if span == self.timeline.horizon
                else f"{self.rules.window:g} s (the fraud window)")
        return [f"too few cards: an honest card may enter {allowance} times in "
                f"{self.rules.window:g} s before a fraud rule flags it, so "
                f"{len(self._honest)} cards carry {capacity} entries, and {over} at "
                f"{honest_rate:.4g} honest entries/s needs {needed}: entries with no card "
                f"left are skipped (use --cards {cards} or more, or a lower --rate)"]

    def _set_aside_clones(self, cards: Cards, fraud_ratio: float) -> list[int]:
        if fraud_ratio == 0:
            return []
        if not cards.enabled:
            raise ValueError("cloned cards need enabled cards, and none is loaded")
        count = min(len(cards.enabled), max(1, round(len(cards.ids) * fraud_ratio)))
        return self.rng.sample(cards.enabled, count)

    def _honest_entries(self, rate: float) -> Iterator[Event]:
        """Entries at a steady rate; the card of a known rider is chosen when the entry is
        sent (prepare), when the pool knows who is still on board."""
        for due in steady(rate):
            if self.rng.random() < self.unknown_share:
                self.unknown_swipes += 1
                card = self._unknown_base + self.rng.randrange(1_000_000_000)
            else:
                card = POOLED
            yield Entry(due, self.sim_ts(due), card, self.stations.draw(self.rng))

    def prepare(self, event: Event) -> bool:
        """Called by the run just before sending: give a pooled entry its card; False (skip
        it) when no card may enter now without tripping a fraud rule."""
        if isinstance(event, Entry) and event.card_id == POOLED:
            card = self.pool.draw(event.ts.timestamp())
            if card is None:
                self.skipped += 1
                return False
            event.card_id = card
        return True

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
                due = start + number * CLONE_SPACING
                self.timeline.add(Entry(due, self.sim_ts(due), card, station))
            yield Entry(start, self.sim_ts(start), card, places[0])

    def describe(self) -> str:
        rides = ("rides as long as data/line.csv says" if self.speedup == 1 else
                 f"rides {self.speedup:g}x shorter than data/line.csv")
        return (f"{self.target_rate:g} entries/s, {rides} (timestamps on the real clock), "
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
            self._release(event.card_id, event.ts)
        elif isinstance(event, Entry):
            if outcome.result is Result.ACCEPTED:
                destination = self._destination(event.station_id)
                ride = self.ride(event.station_id, destination)
                self.riding.add(event.card_id)
                self.timeline.add(Exit(event.due + ride, event.ts + timedelta(seconds=ride),
                                       event.card_id, destination))
            else:
                self._release(event.card_id, event.ts)

    def _release(self, card: int, ts: datetime) -> None:
        if card in self._pooled:
            self.pool.release(card, ts.timestamp())

    def summary_lines(self) -> list[str]:
        lines = [f"cloned-card bursts: {self.bursts} of {CLONE_BURST} entries; "
                 f"unknown-card swipes: {self.unknown_swipes}"]
        if self.skipped:
            lines.append(f"honest entries skipped: {self.skipped}, for want of a card that no "
                         f"fraud rule would flag (each may enter {self.rules.allowance} times "
                         f"in {self.rules.window:g} s, none while on board): use more --cards "
                         "or a lower --rate")
        if self.riding:
            shortest, longest = self.ride_range()
            times = ("data/line.csv's times" if self.speedup == 1
                     else f"data/line.csv's times / {self.speedup:g}")
            lines.append(f"riders still on board at the end: {len(self.riding)}; their exits "
                         f"fall after the run, because rides take {shortest:g} to {longest:g} s "
                         f"({times})"
                         + ("; to see exits within a short run, shorten the rides with "
                            "--speedup (e.g. --speedup 20) or run longer (--duration)"
                            if self.speedup == 1 else ""))
        return lines

    def ride_range(self) -> tuple[float, float]:
        """The shortest and the longest ride, in seconds."""
        stations = self.line.stations
        rides = [self.ride(a, b) for a, b in itertools.combinations(stations, 2)]
        return round(min(rides), 1), round(max(rides), 1)

"""Payments for the risk rules: a steady stream over a range of accounts, with amounts
crowded around the shipped rules' boundaries (5,000 and 10,000) so every rule decides.

Transaction ids are `<run>-<n>`, `<run>` taken from the start time, so runs never
reuse an id (a reused id would get its recorded decision back).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal

from .events import Event, Payment
from .reference import WeightedChoice
from .simulation import Simulation
from .timeline import steady

# The exact boundaries of the shipped rules, in cents.
BOUNDARIES = (500000, 500001, 1000000, 1000001)
# (low cents, high cents, weight): everyday amounts, amounts near each boundary,
# large ones; plus the boundaries themselves.
RANGES = ((100, 50000, 60), (490000, 510000, 12), (990000, 1010000, 12), (1010000, 5000000, 8))
BOUNDARY_WEIGHT = 2  # each


class Payments(Simulation):
    name = "payments"
    target_label = "payments"

    def __init__(self, *, rate: float, accounts: int, start_ts: datetime | None, horizon: float,
                 rng: random.Random) -> None:
        super().__init__(start_ts, horizon)
        if rate <= 0 or accounts <= 0:
            raise ValueError("rate and accounts must be positive")
        self.target_rate = rate
        self.accounts = accounts
        self.rng = rng
        self.run_id = (f"{self.start_ts:%Y%m%dT%H%M%S}"
                       f"{self.start_ts.microsecond // 1000:03d}")
        self.kinds = WeightedChoice(list(range(len(RANGES) + len(BOUNDARIES))),
                                    [w for *_, w in RANGES] + [BOUNDARY_WEIGHT] * len(BOUNDARIES))
        self.timeline.add_stream(self._payments(rate))

    def describe(self) -> str:
        return f"{self.target_rate:g} payments/s over accounts 1..{self.accounts}"

    def amount(self) -> Decimal:
        kind = self.kinds.draw(self.rng)
        if kind < len(RANGES):
            low, high, _ = RANGES[kind]
            cents = self.rng.randint(low, high)
        else:
            cents = BOUNDARIES[kind - len(RANGES)]
        return Decimal(cents).scaleb(-2)

    def _payments(self, rate: float) -> Iterator[Event]:
        for n, due in enumerate(steady(rate), start=1):
            yield Payment(due, self.sim_ts(due), f"{self.run_id}-{n}",
                          self.rng.randint(1, self.accounts), self.amount())

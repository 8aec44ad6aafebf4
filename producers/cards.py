"""Card generator: the cards CSV of DESIGN.md with a documented mix, deterministic by seed.

The mix (each share is a probability per card):
- 10% unlimited cards (card_type 1): three in four expire 30 to 365 days after the
  reference date, one in four expired 1 to 180 days before it;
- 90% pay-per-ride cards (card_type 0) with balances in tiers: 10% under 2.00 (below
  every fare, so they are refused), 50% 5.00-20.00, 30% 20.00-50.00, 10% 50.00-100.00,
  in steps of 0.25;
- 2% of all cards disabled;
- alerts: 60% none, 25% e-mail, 15% text; a card that wants e-mail has an address,
  one that wants texts has a phone, the others have each half of the time.
"""

from __future__ import annotations

import csv
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import astuple, dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TextIO, TypeVar

HEADER = ["card_id", "enabled", "card_type", "balance", "expires", "name", "phone", "email",
          "notify"]

UNLIMITED_SHARE = 0.10
EXPIRED_SHARE = 0.25      # of unlimited cards
DISABLED_SHARE = 0.02
BALANCE_TIERS = ((0.10, (0, 175)), (0.50, (500, 2000)), (0.30, (2000, 5000)),
                 (0.10, (5000, 10000)))
NOTIFY_MIX = ((0.60, 0), (0.25, 1), (0.15, 2))  # none, e-mail, text

FIRST_NAMES = ("Ada", "Bo", "Cy", "Di", "Ed", "Fay", "Gus", "Hana", "Ivo", "Jun", "Kit", "Lea",
               "Milo", "Nia", "Otto", "Pia", "Quin", "Rae", "Sol", "Tess", "Uma", "Vic", "Wen")
LAST_NAMES = ("Quill", "Lantern", "Foundry", "Harbor", "Mill", "Copper", "Linden", "River",
              "Glass", "Garden", "Exchange", "Market", "Square", "Hill", "Field", "Park")


T = TypeVar("T")


@dataclass(frozen=True)
class Card:
    card_id: int
    enabled: int          # 1 or 0, as in the CSV
    card_type: int        # 0 pay-per-ride, 1 unlimited
    balance: int          # cents
    expires: str          # ISO timestamp, empty for pay-per-ride
    name: str
    phone: str
    email: str
    notify: int           # 0 none, 1 e-mail, 2 text


def _pick(rng: random.Random, shares: tuple[tuple[float, T], ...]) -> T:
    point = rng.random()
    for share, value in shares:
        if point < share:
            return value
        point -= share
    return shares[-1][1]


def _card(card_id: int, rng: random.Random, as_of: datetime) -> Card:
    enabled = 0 if rng.random() < DISABLED_SHARE else 1
    if rng.random() < UNLIMITED_SHARE:
        card_type, balance = 1, 0
        days = (-rng.randint(1, 180) if rng.random() < EXPIRED_SHARE else rng.randint(30, 365))
        expires = (as_of + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")
    else:
        card_type, expires = 0, ""
        low, high = _pick(rng, BALANCE_TIERS)
        balance = rng.randint(low // 25, high // 25) * 25
    notify = _pick(rng, NOTIFY_MIX)
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    wants_phone = notify == 2 or rng.random() < 0.5
    wants_email = notify == 1 or rng.random() < 0.5
    return Card(card_id, enabled, card_type, balance, expires, f"{first} {last}",
                f"555-{rng.randrange(10000):04d}" if wants_phone else "",
                f"{first.lower()}.{last.lower()}.{card_id}@example.org" if wants_email else "",
                notify)


def _midnight(as_of: date) -> datetime:
    return datetime.combine(as_of, time(), tzinfo=UTC)


def generate(count: int, as_of: date, seed: int | None = None,
             first_id: int = 1) -> Iterator[Card]:
    """count cards numbered from first_id; expiry dates are relative to as_of midnight UTC."""
    rng = random.Random(seed)
    for card_id in range(first_id, first_id + count):
        yield _card(card_id, rng, _midnight(as_of))


def write_csv(cards: Iterator[Card], output: TextIO, as_of: date) -> Counter[str]:
    """Write the CSV (with header) and return the mix actually written."""
    reference = _midnight(as_of).strftime("%Y-%m-%dT%H:%M:%SZ")
    mix: Counter[str] = Counter()
    writer = csv.writer(output, lineterminator="\n")
    writer.writerow(HEADER)
    for card in cards:
        writer.writerow(astuple(card))
        mix["cards"] += 1
        mix["disabled"] += 1 - card.enabled
        if card.card_type:
            mix["unlimited"] += 1
            mix["expired"] += card.expires < reference
        else:
            mix["pay-per-ride"] += 1
        mix[("no alerts", "e-mail alerts", "text alerts")[card.notify]] += 1
    return mix

"""Reference data the simulators draw from, read once from the database at start."""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg

from metro.errors import MetroError

NO_SCHEMA_HINT = "is the metro schema installed? run: metro install"


@dataclass(frozen=True)
class Cards:
    ids: list[int]       # every card in use, in card_id order
    enabled: list[int]   # the enabled ones among them
    unknown_from: int    # card ids from here on are in no row of metro.cards


class WeightedChoice:
    """Draws items with probability proportional to their weight (bisect on cumulative sums)."""

    def __init__(self, items: Sequence[int], weights: Sequence[int]) -> None:
        if not items or sum(weights) <= 0:
            raise MetroError("no station has a positive weight to draw riders from")
        self.items = list(items)
        self._cumulative = list(itertools.accumulate(weights))

    def draw(self, rng: random.Random) -> int:
        point = rng.random() * self._cumulative[-1]
        return self.items[bisect.bisect_right(self._cumulative, point)]


def _fetch(conn: psycopg.Connection, query: str, params: tuple[object, ...] = ()) -> list[tuple]:
    try:
        return conn.execute(query, params).fetchall()
    except psycopg.errors.UndefinedTable:
        raise MetroError(f"metro tables not found: {NO_SCHEMA_HINT}") from None


def load_stations(conn: psycopg.Connection) -> WeightedChoice:
    rows = _fetch(conn, "SELECT station_id, weight FROM metro.stations ORDER BY station_id")
    if not rows:
        raise MetroError("metro.stations is empty: load data/stations.csv first "
                         "(loader --header data/stations.csv)")
    return WeightedChoice([row[0] for row in rows], [row[1] for row in rows])


def load_cards(conn: psycopg.Connection, limit: int | None) -> Cards:
    """The first `limit` cards by card_id (all of them when limit is None)."""
    rows = _fetch(conn, "SELECT card_id, enabled FROM metro.cards ORDER BY card_id LIMIT %s",
                  (limit,))
    if not rows:
        raise MetroError("metro.cards is empty: generate cards with "
                         "`producers cards --count 100000 --output cards.csv` and load them")
    highest = _fetch(conn, "SELECT max(card_id) FROM metro.cards")[0][0]
    return Cards([row[0] for row in rows], [row[0] for row in rows if row[1]], highest + 1)


def check_trains(conn: psycopg.Connection, count: int) -> list[int]:
    """Train ids 1..count, each of which must be in metro.trains."""
    wanted = list(range(1, count + 1))
    known = {row[0] for row in _fetch(conn, "SELECT train_id FROM metro.trains")}
    missing = [train for train in wanted if train not in known]
    if missing:
        raise MetroError(f"train {missing[0]} is not in metro.trains ({len(known)} trains "
                         "loaded): load data/trains.csv or ask for fewer --trains")
    return wanted


def check_line_stations(conn: psycopg.Connection, line_stations: Sequence[int]) -> None:
    known = {row[0] for row in _fetch(conn, "SELECT station_id FROM metro.stations")}
    missing = [station for station in line_stations if station not in known]
    if missing:
        raise MetroError(f"station {missing[0]} of the line timing is not in metro.stations: "
                         "load data/stations.csv first")

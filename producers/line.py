"""The line's timing: stations in line order, travel seconds to the next one, dwell seconds.

data/line.csv has the header `station_id,travel_seconds,dwell_seconds`, one row per
station in line order; travel_seconds is the run to the next station and is empty
on the last row. Trains use the same time in both directions.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from metro import config
from metro.errors import MetroError

LINE_CSV = config.DATA_DIR / "line.csv"
HEADER = ["station_id", "travel_seconds", "dwell_seconds"]


@dataclass(frozen=True)
class Line:
    stations: tuple[int, ...]
    travel: tuple[int, ...]  # travel[i]: seconds from stations[i] to stations[i + 1]
    dwell: tuple[int, ...]   # dwell[i]: seconds a train stands at stations[i]

    def position(self, station_id: int) -> int:
        try:
            return self.stations.index(station_id)
        except ValueError:
            raise MetroError(f"station {station_id} is not on the line ({LINE_CSV.name})") from None

    def ride_seconds(self, origin: int, destination: int) -> int:
        """Seconds on board from origin to destination: the runs plus the stops in between."""
        a, b = sorted((self.position(origin), self.position(destination)))
        return sum(self.travel[a:b]) + sum(self.dwell[a + 1:b])


def load_line(path: Path = LINE_CSV) -> Line:
    """Read and check a line timing file; a bad file is a one-line MetroError."""
    try:
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle))
    except OSError as error:
        raise MetroError(f"cannot read line timing {path}: {error.strerror}") from None
    if not rows or [cell.strip() for cell in rows[0]] != HEADER:
        raise MetroError(f"{path}: the first line must be {','.join(HEADER)}")
    stations: list[int] = []
    travel: list[int] = []
    dwell: list[int] = []
    body = rows[1:]
    for number, row in enumerate(body, start=2):
        where = f"{path}, line {number}"
        if len(row) != len(HEADER):
            raise MetroError(f"{where}: expected {len(HEADER)} columns, got {len(row)}")
        station, run, stand = (cell.strip() for cell in row)
        stations.append(_number(station, "station_id", where))
        dwell.append(_seconds(stand, "dwell_seconds", where))
        if number < len(body) + 1:
            travel.append(_seconds(run, "travel_seconds", where))
        elif run:
            raise MetroError(f"{where}: the last station has no next station: "
                             "leave travel_seconds empty")
        if stations[-1] in stations[:-1]:
            raise MetroError(f"{where}: station {stations[-1]} appears twice")
    if len(stations) < 2:
        raise MetroError(f"{path}: a line needs at least two stations")
    return Line(tuple(stations), tuple(travel), tuple(dwell))


def _number(text: str, column: str, where: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise MetroError(f"{where}: {column} must be a whole number, got {text!r}") from None


def _seconds(text: str, column: str, where: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise MetroError(
            f"{where}: {column} must be a whole number of seconds, got {text!r}") from None
    if value <= 0:
        raise MetroError(f"{where}: {column} must be positive, got {value}")
    return value

"""Trains move along the line: arrival and departure alternate at each station, the next
station is adjacent, trains reverse only at the ends, and the times follow data/line.csv."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest

from metro.errors import MetroError
from metro.producers.cli import main
from metro.producers.line import load_line
from metro.producers.trains import movements, round_trip_seconds

LINE = load_line()


def test_line_timing_matches_the_stations_file(conn, stations):
    ids = [row[0] for row in conn.execute("SELECT station_id FROM metro.stations ORDER BY 1")]
    assert list(LINE.stations) == ids
    assert len(LINE.travel) == len(ids) - 1
    assert LINE.ride_seconds(1, 3) == LINE.travel[0] + LINE.dwell[1] + LINE.travel[1]
    assert LINE.ride_seconds(3, 1) == LINE.ride_seconds(1, 3)


def test_one_cycle_of_movements_returns_to_the_start():
    cycle = round_trip_seconds(LINE)
    steps = list(itertools.islice(movements(LINE), 4 * (len(LINE.stations) - 1) + 1))
    assert steps[0] == (0, 1, 0)
    assert steps[-1] == (cycle, 1, 0)  # arrives back at the first station after one cycle


def check_movement(events, line, speedup=1):
    """Assert the rules on one train's (station, activity, ts) events, in time order: each
    dwell and run lasts the timing table's seconds divided by the speed-up (to the
    microsecond the timestamps keep)."""
    def lasts(gap, seconds):
        return abs(gap - timedelta(seconds=seconds / speedup)) <= timedelta(microseconds=1)

    position = {station: index for index, station in enumerate(line.stations)}
    last = len(line.stations) - 1
    direction = None
    for (station, activity, ts), (next_station, next_activity, next_ts) in \
            itertools.pairwise(events):
        assert next_activity == 1 - activity
        here = position[station]
        if activity == 0:  # arrival, then departure from the same station after its dwell
            assert next_station == station
            assert lasts(next_ts - ts, line.dwell[here])
        else:              # departure, then arrival at an adjacent station after the run
            step = position[next_station] - here
            assert step in (-1, 1)
            if direction is not None and step != direction:
                assert here in (0, last), f"reversed at station {station}"
            direction = step
            assert lasts(next_ts - ts, line.travel[min(here, here + step)])


def test_trains_follow_the_timing_table(conn, stations, db, monkeypatch, capsys):
    monkeypatch.setenv("METRO_DATABASE_URL", db)
    assert main(["trains", "--trains", "3", "--speedup", "4000", "--duration", "2",
                 "--display-interval", "1"]) == 0
    out = capsys.readouterr().out
    rows = conn.execute("SELECT train_id, station_id, activity_type, ts FROM metro.train_events"
                        " ORDER BY train_id, ts").fetchall()
    total = len(rows)
    assert f"train move  {total:>8}         0      0       0" in out
    reversed_at_end = 0
    for _, group in itertools.groupby(rows, key=lambda row: row[0]):
        events = [(station, activity, ts) for _, station, activity, ts in group]
        # 2 s at 4000x is 8000 line seconds: more than a round trip each, on the real clock.
        assert events[-1][2] - events[0][2] > timedelta(seconds=round_trip_seconds(LINE) / 4000)
        check_movement(events, LINE, speedup=4000)
        reversed_at_end += sum(1 for station, activity, _ in events
                               if activity == 1 and station in (1, 15))
    assert reversed_at_end >= 6
    # Trains start spread over the cycle: no two begin at the same place going the same way.
    starts = {tuple(station for _, station, _, _ in list(group)[:3])
              for _, group in itertools.groupby(rows, key=lambda row: row[0])}
    assert len(starts) == 3
    # The speed-up shortens the runs; no timestamp runs ahead of the real clock.
    assert conn.execute("SELECT max(ts) <= now() FROM metro.train_events").fetchone() == (True,)


def test_unknown_train_is_refused_and_nothing_written(conn, stations, db, monkeypatch, capsys):
    monkeypatch.setenv("METRO_DATABASE_URL", db)
    assert main(["trains", "--trains", "9", "--duration", "1"]) == 2
    assert capsys.readouterr().err == (
        "producers: train 9 is not in metro.trains (8 trains loaded): "
        "load data/trains.csv or ask for fewer --trains\n")
    assert conn.execute("SELECT count(*) FROM metro.train_events").fetchone() == (0,)


@pytest.mark.parametrize(("text", "error"), [
    ("station_id,travel_seconds\n1,10\n", "the first line must be"),
    ("station_id,travel_seconds,dwell_seconds\n1,10,5\n2,x,5\n3,,5\n",
     "line 3: travel_seconds must be a whole number of seconds, got 'x'"),
    ("station_id,travel_seconds,dwell_seconds\n1,10,5\n2,,5\n3,,5\n",
     "line 3: travel_seconds must be a whole number of seconds, got ''"),
    ("station_id,travel_seconds,dwell_seconds\n1,10,5\n2,10,5\n",
     "line 3: the last station has no next station: leave travel_seconds empty"),
    ("station_id,travel_seconds,dwell_seconds\n1,10\n2,,5\n", "line 2: expected 3 columns, got 2"),
    ("station_id,travel_seconds,dwell_seconds\n1,10,5\n1,,5\n", "line 3: station 1 appears twice"),
    ("station_id,travel_seconds,dwell_seconds\n1,0,5\n2,,5\n",
     "line 2: travel_seconds must be positive, got 0"),
])
def test_bad_line_file_is_a_one_line_error(tmp_path, text, error):
    path = tmp_path / "line.csv"
    path.write_text(text)
    with pytest.raises(MetroError, match=error):
        load_line(path)

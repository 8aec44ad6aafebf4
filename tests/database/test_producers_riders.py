"""Riders and recharges against the real functions: the achieved rate, printed outcomes
equal to the rows written, injected fraud detected, Ctrl-C and a lost connection."""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from metro.producers import cards, reference
from metro.producers.cli import main
from metro.producers.engine import Run
from metro.producers.recharges import Recharges
from metro.producers.simulation import REAL_CLOCK
from metro.producers.sinks import DirectSink
from metro.producers.stats import LATE_SHARE

CARDS = 2000


@pytest.fixture
def loaded(conn, stations):
    """Stations, trains and CARDS generated cards, loaded with COPY."""
    output = io.StringIO()
    today = datetime.now(UTC).date()
    cards.write_csv(cards.generate(CARDS, today, seed=21), output, today)
    with conn.cursor().copy("COPY metro.cards FROM STDIN (FORMAT csv, HEADER true)") as copy:
        copy.write(output.getvalue())


def printed_totals(out: str) -> list[int]:
    match = re.search(r"^total +(\d+) +(\d+) +(\d+) +(\d+)$", out, re.MULTILINE)
    assert match, out
    return [int(group) for group in match.groups()]


def outcome_rows(conn) -> list[int]:
    """accepted, rejected, fraud rows in card_events."""
    row = conn.execute("SELECT count(*) FILTER (WHERE accept = 1), count(*) FILTER (WHERE"
                       " accept = 0), count(*) FILTER (WHERE accept = -1) FROM metro.card_events"
                       ).fetchone()
    return list(row)


def expected_fraud(conn) -> int:
    """Entries the fraud rules (settings as shipped) refuse, worked out from the recorded
    events of enabled cards in the order they were recorded: a gate swipe of the card
    earlier in the same second, or 5 distinct stations or 10 entries among its earlier
    entries of the last hour."""
    rows = conn.execute(
        "SELECT e.card_id, e.ts, e.station_id, e.activity_code FROM metro.card_events e"
        " JOIN metro.cards c USING (card_id) WHERE c.enabled ORDER BY e.card_id, e.event_id"
    ).fetchall()
    refused = 0
    earlier: dict[int, list[tuple]] = {}
    for card, ts, station, activity in rows:
        before = earlier.setdefault(card, [])
        if activity == 1:
            second = ts.replace(microsecond=0)
            window = [s for t, s, a in before if a == 1 and ts - timedelta(hours=1) <= t < ts]
            if (any(t.replace(microsecond=0) == second for t, _, a in before if a in (1, -1))
                    or len(window) >= 10 or len(set(window)) >= 5):
                refused += 1
        before.append((ts, station, activity))
    return refused


@pytest.mark.parametrize("mode", ["pipeline", "async"])
def test_riders_run_matches_the_database(mode, conn, loaded, db, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("METRO_DATABASE_URL", db)
    stats_file = tmp_path / "riders.json"
    assert main(["riders", "--rate", "200", "--duration", "3", "--speedup", "600",
                 "--fraud-ratio", "0.05", "--seed", "4", "--mode", mode, "--display-interval",
                 "1", "--stats-file", str(stats_file)]) == 0
    out = capsys.readouterr().out
    summary = json.loads(stats_file.read_text())

    # 570 honest entries (190/s) and 5 bursts of cloned entries (10/s); the bursts start
    # every 0.6 s with swipes 0.4 s apart, so only those before 3 s are sent: 6 + 6 + 5 +
    # 3 + 2. The rate achieved is those 592 over the run's time, which a busy machine
    # stretches past the 3 s.
    assert summary["achieved_rate"] == pytest.approx(592 / summary["elapsed_s"], abs=0.1)
    # The run lasts until the last call, due at 569/190 s, is answered (2.999 s once).
    assert 569 / 190 <= summary["elapsed_s"] < 10
    # Every call was sent. Whether the rate counts as kept depends on the machine's
    # hiccups (more than 1% of the sends 50 ms late: a fresh clone's run once had that):
    # the verdict follows the counts, and keeping the rate is bench_producers' figure.
    assert summary["unsent"] == 0
    kept = summary["late"] <= LATE_SHARE * summary["sent"]
    assert summary["rate_kept"] is kept
    assert "entries: " in out and ("target 200/s: kept" in out) is kept
    entries = conn.execute("SELECT count(*) FROM metro.card_events WHERE activity_code = 1")
    assert entries.fetchone() == (592,)

    # What was printed is what was written.
    accepted, rejected, fraud, errors = printed_totals(out)
    assert errors == 0
    assert [accepted, rejected, fraud] == outcome_rows(conn)
    assert summary["outcomes"] == {"accepted": accepted, "rejected": rejected, "fraud": fraud,
                                   "errors": 0}

    # Unknown cards are refused, and only they.
    unknown = conn.execute("SELECT count(*) FROM metro.card_events e WHERE NOT EXISTS"
                           " (SELECT FROM metro.cards c WHERE c.card_id = e.card_id)").fetchone()
    assert summary["messages"].get("Card Invalid", 0) == unknown[0]

    # Cloned cards were caught, and only they: an honest card is used once in this run.
    # The seed fixes the 5 bursts (cards, stations, spacing); the clock starts at now(), so
    # where a burst's swipes fall within their seconds, and so how many the same-second
    # rule catches, is worked out from the recorded times, by the rules.
    bursts = conn.execute(
        "SELECT card_id, count(*), count(DISTINCT station_id) FROM metro.card_events"
        " WHERE activity_code = 1 GROUP BY card_id HAVING count(*) > 1").fetchall()
    assert sorted(count for _, count, _ in bursts) == [2, 3, 5, 6, 6]
    assert all(stations == count for _, count, stations in bursts)
    assert fraud == expected_fraud(conn) and fraud > 0
    assert conn.execute("SELECT count(*) FROM metro.fraud").fetchone() == (fraud,)
    caught = conn.execute(
        "SELECT f.card_id, count(DISTINCT e.station_id) FROM metro.fraud f"
        " JOIN metro.card_events e USING (card_id) WHERE e.activity_code = 1"
        " GROUP BY f.card_id").fetchall()
    assert caught and all(stations >= 2 for _, stations in caught)

    # Accepted riders left at other stations after their ride (speedup 600). A cloned card
    # may pair its exit with another clone's later entry, so only honest cards are checked.
    trips = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE entry_station = exit_station AND card_id NOT IN"
        " (SELECT card_id FROM metro.fraud)) FROM metro.trips").fetchone()
    assert trips[0] > 0 and trips[1] == 0
    assert summary["messages"]["Exit recorded"] == trips[0]
    assert summary["by_call"]["exit"]["accepted"] == conn.execute(
        "SELECT count(*) FROM metro.card_events WHERE activity_code = -1").fetchone()[0]


def test_recharges_credit_exactly_what_they_report(conn, loaded, db, monkeypatch, capsys):
    monkeypatch.setenv("METRO_DATABASE_URL", db)
    before = conn.execute("SELECT sum(balance) FROM metro.cards").fetchone()[0]
    assert main(["recharges", "--rate", "50", "--duration", "1", "--seed", "2",
                 "--display-interval", "5"]) == 0
    accepted, rejected, fraud, errors = printed_totals(capsys.readouterr().out)
    assert (accepted + rejected, fraud, errors) == (50, 0, 0)
    credited, count = conn.execute(
        "SELECT coalesce(sum(amount), 0), count(*) FILTER (WHERE accept = 1)"
        " FROM metro.card_events WHERE activity_code = 2").fetchone()
    assert count == accepted
    assert conn.execute("SELECT sum(balance) FROM metro.cards").fetchone()[0] == before + credited


def start_producer(db: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "METRO_DATABASE_URL": db}
    return subprocess.Popen([sys.executable, "-m", "metro.producers.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_line(process: subprocess.Popen[str], text: str, timeout: float = 20) -> None:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if text in line:
            return
        if not line and process.poll() is not None:
            break
    process.kill()
    raise AssertionError(f"no line with {text!r}: {process.communicate()}")


def test_ctrl_c_stops_cleanly_with_the_summary(conn, loaded, db):
    process = start_producer(db, "riders", "--rate", "100", "--duration", "0",
                             "--display-interval", "0.5", "--seed", "1")
    wait_for_line(process, "calls/s")
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    assert "stopped by Ctrl-C" in out
    assert "latency from scheduled send" in out
    accepted, rejected, fraud, errors = printed_totals(out)
    assert errors == 0
    assert [accepted, rejected, fraud] == outcome_rows(conn)


def test_lost_connection_is_reported_and_retried(conn, loaded, db, tmp_path):
    stats_file = tmp_path / "stats.json"
    process = start_producer(db, "riders", "--rate", "200", "--duration", "4",
                             "--display-interval", "0.5", "--seed", "1", "--connections", "2",
                             "--stats-file", str(stats_file))
    wait_for_line(process, "calls/s")
    conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                 " WHERE application_name = 'metro-producers' AND datname = current_database()")
    out, err = process.communicate(timeout=30)
    assert process.returncode == 1, err  # calls failed: not a clean run
    assert "Traceback" not in err
    assert re.search(r"producers: connection [12] lost: .*, reconnecting", err), err
    assert re.search(r"producers: connection [12] restored after 1 attempt\(s\)", err), err
    summary = json.loads(stats_file.read_text())
    recorded = sum(outcome_rows(conn))
    answered = sum(summary["outcomes"][name] for name in ("accepted", "rejected", "fraud"))
    # A call cut off with its connection may or may not have committed.
    assert answered <= recorded <= answered + summary["outcomes"]["errors"]
    assert summary["outcomes"]["errors"] > 0
    assert (f"producers: {summary['outcomes']['errors']} of {summary['calls']} calls failed"
            " (their messages are counted above)\n") in err
    assert summary["messages"]["Remaining Balance"] > 0  # it kept going after the loss


def card_event_counts(conn) -> tuple[int, int, int]:
    """Entries, fraud-flagged swipes, and swipes later than the database's now()."""
    return conn.execute("SELECT count(*) FILTER (WHERE activity_code = 1),"
                        " count(*) FILTER (WHERE accept = -1), count(*) FILTER (WHERE ts > now())"
                        " FROM metro.card_events").fetchone()


def test_a_speedup_shortens_rides_and_never_dates_a_swipe_ahead_of_now(conn, loaded, db,
                                                                       monkeypatch, capsys):
    monkeypatch.setenv("METRO_DATABASE_URL", db)
    assert main(["riders", "--rate", "100", "--duration", "4", "--speedup", "60", "--seed", "3",
                 "--fraud-ratio", "0", "--display-interval", "2"]) == 0
    out = capsys.readouterr().out
    assert "rides 60x shorter than data/line.csv (timestamps on the real clock)" in " ".join(
        out.split())
    entries, fraud, future = card_event_counts(conn)
    assert (entries, fraud, future) == (400, 0, 0)
    # Rides of 90 s to 34 min take 1.5 s to 34 s: the shortest ones ended within the run.
    trips = conn.execute("SELECT count(*), min(exit_ts - entry_ts), max(exit_ts) <= now()"
                         " FROM metro.trips").fetchone()
    assert trips[0] > 0 and trips[1].total_seconds() >= 1.5 and trips[2] is True
    assert re.search(r"^riders still on board at the end: \d+; their exits fall after the run, "
                     r"because rides take 1\.5 to 34\.4 s \(data/line\.csv's times / 60\)$",
                     out, re.M), out


def test_too_few_cards_are_said_and_honest_riders_never_look_like_fraud(conn, loaded, db,
                                                                         monkeypatch, capsys):
    """40 cards at 100 entries/s: every card enters at most 5 times an hour, never twice
    in a second and never while on board; the rest is skipped, and a second run counts the
    first one's entries."""
    monkeypatch.setenv("METRO_DATABASE_URL", db)
    args = ["riders", "--rate", "100", "--duration", "3", "--cards", "40", "--fraud-ratio", "0",
            "--unknown-share", "0", "--seed", "5", "--display-interval", "5"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert ("warning: too few cards: an honest card may enter 5 times in 3600 s before a fraud"
            " rule flags it, so 40 cards carry 200 entries, and the run at 100 honest"
            " entries/s needs 300: entries with no card left are skipped (use --cards 60 or"
            " more, or a lower --rate)") in " ".join(out.split())
    entries, fraud, future = card_event_counts(conn)
    skipped = re.search(r"^honest entries skipped: (\d+), for want of a card that no fraud "
                        r"rule would flag \(each may enter 5 times in 3600 s, none while on "
                        r"board\): use more --cards or a lower --rate$", out, re.M)
    assert skipped, out
    assert (entries + int(skipped.group(1)), fraud, future) == (300, 0, 0)
    per_card = conn.execute("SELECT max(n) FROM (SELECT count(*) n FROM metro.card_events"
                            " WHERE activity_code = 1 GROUP BY card_id) c").fetchone()[0]
    assert per_card <= 5

    assert main(args) == 0
    capsys.readouterr()
    entries_after, fraud, future = card_event_counts(conn)
    assert (fraud, future) == (0, 0)
    assert entries_after - entries < 300


def test_swipes_are_stamped_when_sent_however_long_the_setup(conn, loaded, db):
    """A simulation on the real clock starts it with the run: a setup that took a second
    (reading the cards and their history, connecting) does not date every swipe a second
    before it was sent (the demo's last complete second was half empty)."""
    with psycopg.connect(db) as reader:
        built = Recharges(rate=20, cards=reference.load_cards(reader, None),
                          stations=reference.load_stations(reader), start_ts=REAL_CLOCK,
                          horizon=1.0, rng=random.Random(3))
    time.sleep(1.0)  # a slow setup
    sink = DirectSink(db, mode="pipeline", connections=1, report=print)
    started = conn.execute("SELECT clock_timestamp()").fetchone()[0]
    result = asyncio.run(Run(built, sink, display_interval=5).run())
    assert result.summary["outcomes"]["accepted"] == 20
    first, last, now = conn.execute("SELECT min(ts), max(ts), clock_timestamp()"
                                    " FROM metro.card_events").fetchone()
    assert started <= first and last - first >= timedelta(seconds=0.9) and last <= now

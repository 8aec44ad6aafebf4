"""The demo's live view without a database: every line fits an 80-column terminal, the
bridge's table lines up, and off a terminal a refresh that changed nothing prints nothing."""

from __future__ import annotations

import io
from decimal import Decimal

from metro.app.demo_view import Screen, Snapshot, Station, StreamLag

TITLE = ("metro demo: 300 entries/s for 60 s; trains run the line 20x faster than data/line.csv"
         " and rides are 20x shorter; the clock is real; streams to Kafka at 127.0.0.1:19092")
LAG = [StreamLag("fraud", "FRAUD", 12, 0, None),
       StreamLag("card_alert_export", "CARD_ALERT_EXPORT", 300, 4, 1.25),
       StreamLag("trips", "TRIPS", 800, 10, 0.4),
       StreamLag("transaction_decisions", "transaction_decisions", 0, 0, None)]


def snapshot(elapsed: float = 12.3, remaining: float = 47.7) -> Snapshot:
    return Snapshot(elapsed, remaining, 310, 290, Decimal("0.862"), Decimal("0.85"), 12,
                    "card 4242 at Central Exchange",
                    [Station("Central Exchange", 420, 400, Decimal("31.5")),
                     Station("University", 300, 280, None)], LAG)


def test_every_line_fits_80_columns_and_the_bridge_table_lines_up():
    screen = Screen(io.StringIO(), TITLE, width=80)
    screen.note("bridge: holding the lease as vm:25407; forwarding fraud, card_alert_export, "
                "trips, transaction_decisions to 127.0.0.1:19092; consuming TRAINTOPIC, "
                "RECHARGE, transaction_topic")
    lines = screen.render(snapshot())
    assert max(len(line) for line in lines) <= 80
    assert lines[:4] == [
        "metro demo: 300 entries/s for 60 s; trains run the line 20x faster than",
        "    data/line.csv and rides are 20x shorter; the clock is real; streams to Kafka",
        "    at 127.0.0.1:19092",
        "elapsed 12 s, 48 s left"]
    start = lines.index("bridge to topic        delivered  pending  oldest pending")
    assert lines[start + 1:start + 5] == [
        "FRAUD                         12        0               -",
        "CARD_ALERT_EXPORT            300        4           1.2 s",
        "TRIPS                        800       10           0.4 s",
        "transaction_decisions          0        0               -"]
    assert lines[-4:] == [
        "bridge: holding the lease as vm:25407; forwarding fraud, card_alert_export,",
        "    trips, transaction_decisions to 127.0.0.1:19092; consuming TRAINTOPIC,",
        "    RECHARGE, transaction_topic",
        "Ctrl-C stops the demo and prints the summary"]


def test_off_a_terminal_a_refresh_that_changed_nothing_is_not_printed_again():
    output = io.StringIO()
    screen = Screen(output, TITLE)
    screen.show(snapshot(9.0, 1.0))
    screen.show(snapshot(10.0, 0.0))
    screen.show(snapshot(10.0, 0.0))  # the last refresh, after the bridge drained
    assert output.getvalue().splitlines() == [
        "[9 s, 1 s left] 310 swipes/s, acceptance 86.2%, fraud 12, busiest Central Exchange 420"
        " (last minute), average wait 31.5 s, bridge delivered 1112 pending 14",
        "[10 s, load stopped] 310 swipes/s, acceptance 86.2%, fraud 12, busiest Central Exchange"
        " 420 (last minute), average wait 31.5 s, bridge delivered 1112 pending 14"]

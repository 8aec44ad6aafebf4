"""`metro dashboard`: the live page in a real headless Chromium, /metrics parsed as
Prometheus reads it, the views as metro_reader sees them, and its one-line failures."""

from __future__ import annotations

import csv
import json
import os
import re
import socket
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from browser import Chromium
from dashboard_fixtures import (
    PROJECT_ROOT,
    as_user,
    free_port,
    run_metro,
)
from factories import catch_up
from kafka_fixtures import skip_inbound_backlog, wait_until
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql
from roles import login_role

from metro import config
from metro.app import demo_view
from metro.app.web import metrics, queries

VIEWS = ("dashboard_seconds", "dashboard_stations", "dashboard_trains", "dashboard_fraud_feed",
         "dashboard_payments", "dashboard_totals")


def one(conn: psycopg.Connection, query: str, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def second_base(conn: psycopg.Connection, seconds_back: int) -> datetime:
    """A tenth of a second into the whole second that began seconds_back seconds ago."""
    return one(conn, "SELECT date_trunc('second', now()) - make_interval(secs => %s)"
                     " + interval '0.1 second'", (seconds_back,))


def swipe(conn: psycopg.Connection, card: int, station: int, ts: datetime | str) -> str:
    """A swipe, rolled up at once into the history the views read (the worker's job)."""
    row = conn.execute("SELECT * FROM metro.validate_entry(%s, %s, %s)",
                       (card, station, ts)).fetchone()
    assert row is not None
    catch_up(conn)
    return str(row[1])


def add_cards(conn: psycopg.Connection, first: int, last: int, balance: int = 10_000) -> None:
    conn.execute("INSERT INTO metro.cards (card_id, balance) SELECT g, %s"
                 " FROM generate_series(%s::bigint, %s::bigint) g", (balance, first, last))


def minute_swipes(conn: psycopg.Connection) -> int:
    """Card events of the last minute, recomputed from card_events (the 60 complete seconds
    before now)."""
    return int(one(conn, "SELECT count(*) FROM metro.card_events"
                         " WHERE ts >= date_trunc('second', now()) - interval '1 minute'"
                         " AND ts < date_trunc('second', now())"))


def busiest_station(conn: psycopg.Connection) -> int:
    return int(one(conn, "SELECT station_id FROM metro.card_events"
                         " WHERE ts >= date_trunc('second', now()) - interval '1 minute'"
                         " AND ts < date_trunc('second', now())"
                         " GROUP BY station_id ORDER BY count(*) DESC, station_id LIMIT 1"))


def value(browser: Chromium, element_id: str) -> str:
    return str(browser.evaluate(f"document.getElementById({element_id!r}).dataset.value"))


def test_views_are_readable_by_metro_reader_and_nothing_else(dashboard_db, conn):
    add_cards(conn, 1, 3)
    base = second_base(conn, 2)
    swipe(conn, 1, 4, base)
    conn.execute("SET ROLE metro_reader")
    for view in VIEWS:
        conn.execute(f"SELECT * FROM metro.{view}").fetchall()
    assert {row[0] for row in conn.execute("SELECT stream FROM metro.bridge_lag()")} == {
        "fraud", "card_alert_export", "trips", "transaction_decisions"}
    for forbidden in ("SELECT * FROM metro.card_events", "SELECT name FROM metro.card_alert_export",
                      "SELECT * FROM metro.cards", "SELECT card_id FROM metro.fraud"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(forbidden)


def test_windows_never_count_the_future(dashboard_db, conn):
    add_cards(conn, 1, 5)
    base = second_base(conn, 2)
    swipe(conn, 1, 4, base)
    swipe(conn, 2, 4, base)
    swipe(conn, 3, 7, one(conn, "SELECT now() + interval '30 minutes'"))
    conn.execute("SELECT * FROM metro.evaluate_transaction('future-1', '9', 10.00,"
                 " now() + interval '1 hour')")
    stations = dict(conn.execute("SELECT station_id, swipes FROM metro.dashboard_stations"))
    assert stations[4] == 2 and stations[7] == 0
    assert sum(row[0] for row in conn.execute("SELECT swipes FROM metro.dashboard_seconds")) == 2
    # The totals are counters of every event recorded, the future one too.
    assert one(conn, "SELECT swipes FROM metro.dashboard_totals") == 3
    assert one(conn, "SELECT count(*) FROM metro.dashboard_seconds") == 300
    assert minute_swipes(conn) == 2


def line_order() -> list[int]:
    with open(config.DATA_DIR / "line.csv", newline="") as handle:
        return [int(row["station_id"]) for row in csv.DictReader(handle)]


@pytest.mark.slow
def test_the_page_shows_the_network_live(dashboard_db, conn, reader_role, start_dashboard,
                                         tmp_path):
    add_cards(conn, 1, 60)
    conn.execute("INSERT INTO metro.risk_tags (account_id, risk_level) VALUES (7, 3)")
    # Earlier, outside the last minute: only the five-minute chart shows them.
    earlier = second_base(conn, 150)
    for card in range(41, 51):
        swipe(conn, card, 2, earlier)
    base = second_base(conn, 2)
    for card in range(1, 7):
        swipe(conn, card, 4, base)
    for card in range(7, 10):
        swipe(conn, card, 9, base)
    swipe(conn, 10, 1, base)
    swipe(conn, 11, 5, base)
    assert swipe(conn, 11, 6, one(conn, "SELECT %s::timestamptz + interval '0.5 second'",
                                  (base,))) == "Fraudulent transaction"
    swipe(conn, 12, 4, one(conn, "SELECT now() + interval '30 minutes'"))   # never counted
    conn.execute("SELECT * FROM metro.evaluate_transaction('dash-1', '7', 20000.00)")
    conn.execute("SELECT * FROM metro.evaluate_transaction('dash-2', '8', 12.50)")
    conn.execute("SELECT metro.record_train_event(1, 3, 0, %s)", (base,))
    conn.execute("SELECT metro.record_train_event(2, 10, 1, %s)", (base,))

    dashboard = start_dashboard(as_user(dashboard_db, reader_role))
    browser = Chromium(tmp_path / "chromium", height=1250)
    try:
        browser.navigate(dashboard.url + "/")
        browser.wait_for("document.body.dataset.updated", what="the first snapshot")
        assert minute_swipes(conn) == 12
        browser.wait_for("document.getElementById('minute-swipes').dataset.value === '12'",
                         what="12 swipes in the last minute")
        assert value(browser, "fraud-total") == str(one(conn, "SELECT count(*) FROM metro.fraud"))
        assert value(browser, "fraud-total") == "1"
        assert value(browser, "minute-fraud") == "1"
        assert browser.evaluate("document.getElementById('acceptance').textContent") == "91.7%"
        assert value(browser, "payments-decided") == "2"
        assert value(browser, "payments-minute-blocked") == "1"
        assert busiest_station(conn) == 4
        assert browser.evaluate(
            "document.querySelector('#busiest tbody tr').dataset.station") == "4"
        assert browser.evaluate(
            "document.querySelector('#busiest tbody tr td').textContent") == "Lantern Square"
        trans_id = one(conn, "SELECT trans_id FROM metro.fraud ORDER BY position DESC LIMIT 1")
        assert browser.evaluate(
            "document.querySelector('#fraud-feed li').dataset.transId") == trans_id
        assert browser.evaluate(
            "[...document.querySelectorAll('#line g[data-station]')]"
            ".map(g => Number(g.dataset.station))") == line_order()
        assert browser.evaluate(
            "[...document.querySelectorAll('#line [data-train]')]"
            ".map(t => Number(t.dataset.train)).sort()") == [1, 2]
        assert browser.evaluate(
            "document.querySelectorAll('#streams tbody tr[data-stream]').length") == 4
        chart_points = browser.evaluate(
            "document.querySelector('#chart polyline').getAttribute('points').split(' ').length")
        assert chart_points == 300

        # More swipes: the numbers move and another station becomes the busiest.
        base = second_base(conn, 1)
        for card in range(13, 21):
            swipe(conn, card, 9, base)
        swipe(conn, 21, 3, base)
        swipe(conn, 21, 8, one(conn, "SELECT %s::timestamptz + interval '0.3 second'", (base,)))
        browser.wait_for("document.getElementById('minute-swipes').dataset.value === '22'",
                         what="22 swipes in the last minute")
        assert minute_swipes(conn) == 22
        assert busiest_station(conn) == 9
        browser.wait_for("document.querySelector('#busiest tbody tr').dataset.station === '9'",
                         what="Central Exchange the busiest")
        assert value(browser, "fraud-total") == "2"
        png = browser.screenshot(tmp_path / "dashboard.png")
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert int.from_bytes(png[16:20], "big") == 1400
        if os.environ.get("METRO_DASHBOARD_SCREENSHOT"):
            browser.screenshot(PROJECT_ROOT / "docs" / "dashboard.png")

        # The bridge far behind: more fraud rows pending than the page counts.
        conn.execute("INSERT INTO metro.fraud (trans_id, card_id, ts, station_id, activity_code,"
                     " amount) SELECT 'backlog-' || n, 1, now(), 1, 1, 250"
                     " FROM generate_series(1, %s) n", (queries.LAG_COUNT_LIMIT,))
        browser.wait_for("document.getElementById('fraud-total').textContent === '100,000+'",
                         what="the fraud total shown as more than the count limit")
        assert browser.evaluate(
            "document.querySelector('#streams tr[data-stream=fraud] td:nth-child(4)')"
            ".textContent") == "100,000+"
    finally:
        browser.close()
    assert dashboard.stop() == 0


def families(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def sample(found: dict[str, Any], name: str, **labels: str) -> float:
    family = found[name.removesuffix("_total")]
    values = [s.value for s in family.samples
              if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(values) == 1, (name, labels, family.samples)
    return float(values[0])


def test_a_second_the_rollup_is_still_on_is_not_shown_as_complete(dashboard_db, conn):
    """The page, /metrics and the demo's line show the last second the rollup has counted
    whole: a second with a swipe not rolled up yet would show a fraction of its swipes."""
    add_cards(conn, 1, 10)
    done = second_base(conn, 3)
    later = done + timedelta(seconds=1)
    for card in range(1, 5):
        swipe(conn, card, 4, done)
    conn.execute("SELECT * FROM metro.validate_entry(5, 4, %s)", (later,))  # not rolled up
    second = one(conn, "SELECT date_trunc('second', %s::timestamptz)", (done,))
    pending = one(conn, "SELECT date_trunc('second', %s::timestamptz)", (later,))

    snapshot = queries.snapshot(conn, queries.Layout([]))
    assert snapshot["seconds"][-1] == [second.isoformat(), 4, 4, 0]
    assert (snapshot["swipes_per_second"], snapshot["minute"]["swipes"]) == (4, 4)
    assert queries.totals(conn)["minute"][0] == {"swipes": 4, "entries": 4, "accepted": 4}
    shown = demo_view.collect(conn, demo_view.Baseline.take(conn), 1.0, 1.0)
    assert (shown.swipes, shown.entries, shown.acceptance) == (4, 4, Decimal(1))

    catch_up(conn)
    snapshot = queries.snapshot(conn, queries.Layout([]))
    assert [pending.isoformat(), 1, 1, 0] in snapshot["seconds"]
    assert snapshot["minute"]["swipes"] == 5


def test_the_demo_shows_the_dashboard_s_average_wait(dashboard_db, conn):
    """Both over the departures of the last 15 minutes: the demo's line used to average
    every departure kept, an earlier run's included."""
    add_cards(conn, 1, 2)
    base = second_base(conn, 5)
    earlier = base - timedelta(minutes=20)
    swipe(conn, 1, 4, earlier)
    conn.execute("SELECT metro.record_train_event(1, 4, 1, %s)",
                 (earlier + timedelta(seconds=100),))
    swipe(conn, 2, 4, base - timedelta(seconds=10))
    conn.execute("SELECT metro.record_train_event(1, 4, 1, %s)", (base,))
    catch_up(conn)
    assert one(conn, "SELECT average_wait_seconds FROM metro.station_wait_times"
                     " WHERE station_id = 4") == Decimal("55.1")  # both departures

    shown = demo_view.collect(conn, demo_view.Baseline.take(conn), 1.0, 1.0)
    page = queries.snapshot(conn, queries.Layout([]))
    assert [(s.name, s.average_wait_s) for s in shown.busiest] == [
        ("Lantern Square", Decimal("10.1"))]
    assert [s["average_wait_seconds"] for s in page["stations"] if s["station_id"] == 4] == [
        10.1]


def test_a_backlog_beyond_the_count_limit_shows_as_more(dashboard_db, conn):
    # A stopped worker and bridge: more pending rows than the snapshot counts each second.
    limit = queries.LAG_COUNT_LIMIT
    conn.execute("INSERT INTO metro.card_events (card_id, ts, station_id, activity_code, amount,"
                 " accept) SELECT n, now() - interval '1 hour', 1 + n %% 15, 1, 250, 1"
                 " FROM generate_series(0, %s) n", (limit + 4,))
    conn.execute("INSERT INTO metro.fraud (trans_id, card_id, ts, station_id, activity_code,"
                 " amount) SELECT n || '_1', n, now() - interval '1 hour', 1, 1, 250"
                 " FROM generate_series(0, %s) n", (limit + 4,))
    with psycopg.connect(dashboard_db, autocommit=True) as reader:
        queries.read_as_reader(reader)
        shown = queries.snapshot(reader, queries.Layout([]))
        worker = {w["source"]: (w["pending"], w["more_pending"]) for w in shown["worker"]}
        assert worker == {"card_events": (limit, True), "card_alert_export": (0, False),
                          "train_events": (0, False), "transaction_decisions": (0, False)}
        streams = {s["stream"]: (s["pending"], s["more_pending"]) for s in shown["streams"]}
        assert streams == {"fraud": (limit, True), "card_alert_export": (0, False),
                           "trips": (0, False), "transaction_decisions": (0, False)}
        assert (shown["fraud_total"], shown["fraud_total_more"]) == (limit, True)
        assert shown["payments"]["decided_total_more"] is False
        catch_up(conn)
        shown = queries.snapshot(reader, queries.Layout([]))
        assert [(w["source"], w["pending"], w["more_pending"]) for w in shown["worker"]
                if w["source"] == "card_events"] == [("card_events", 0, False)]


@pytest.mark.slow
def test_metrics_equal_the_database_counts(dashboard_db, conn, reader_role, kafka,
                                           kafka_producer, start_bridge, start_dashboard,
                                           server_dsn):
    skip_inbound_backlog(dashboard_db, kafka)
    add_cards(conn, 1, 30)
    conn.execute("INSERT INTO metro.cards (card_id, balance, notify) VALUES (99, 100, 1)")
    conn.execute("INSERT INTO metro.risk_tags (account_id, risk_level) VALUES (7, 3)")
    base = second_base(conn, 2)
    for card in range(1, 9):
        swipe(conn, card, 1 + card % 3, base)
    swipe(conn, 9, 5, base)
    swipe(conn, 9, 6, one(conn, "SELECT %s::timestamptz + interval '0.4 second'", (base,)))
    swipe(conn, 99, 4, base)                   # insufficient balance: refused, an alert
    swipe(conn, 12345, 4, base)                # unknown card: refused
    conn.execute("SELECT * FROM metro.process_exit(1, 7, %s::timestamptz + interval '1 second')",
                 (base,))
    conn.execute("SELECT * FROM metro.evaluate_transaction('m-1', '7', 20000.00)")
    conn.execute("SELECT * FROM metro.evaluate_transaction('m-2', '8', 30.00)")
    conn.execute("SELECT * FROM metro.evaluate_transaction('m-3', '8', 31.00)")
    kafka_producer.send("TRAINTOPIC", f"3,4,0,{base.isoformat()}".encode())
    kafka_producer.send("TRAINTOPIC", b"not a train event")
    kafka_producer.flush()
    start_bridge(dashboard_db)
    wait_until(lambda: one(conn, "SELECT coalesce(sum(pending), 1) = 0 FROM metro.bridge_lag()")
               and one(conn, "SELECT count(*) FROM metro.bridge_dead_letters") == 1
               and one(conn, "SELECT count(*) FROM metro.train_events") == 1,
               60, "the bridge to deliver every stream row and apply both messages")
    catch_up(conn)  # the exit and the train event into the history, as the worker would
    conn.execute("SELECT * FROM metro.worker_take_lease('host:1')")
    conn.execute("SELECT * FROM metro.run_maintenance()")

    dashboard = start_dashboard(as_user(dashboard_db, reader_role), "--kafka", kafka)
    found = families(dashboard.get("/metrics"))
    for name in metrics.DOCUMENTED:
        assert name.removesuffix("_total") in found, name
    for name, family in found.items():
        assert name.startswith("metro_"), name
        expected_type = "counter" if f"{name}_total" in metrics.DOCUMENTED else "gauge"
        assert family.type == expected_type, name

    def count(query: str, *params: Any) -> int:
        return int(one(conn, query, params or None))

    assert sample(found, "metro_database_up") == 1
    assert sample(found, "metro_kafka_up") == 1
    for age in ("metro_bridge_heartbeat_age_seconds", "metro_worker_heartbeat_age_seconds",
                "metro_maintenance_age_seconds"):
        assert 0 <= sample(found, age) < 60, age
    assert sample(found, "metro_card_events_total") == count(
        "SELECT count(*) FROM metro.card_events")
    for outcome, accept in (("accepted", 1), ("rejected", 0), ("fraud", -1)):
        assert sample(found, "metro_swipes_total", outcome=outcome) == count(
            "SELECT count(*) FROM metro.card_events WHERE activity_code = 1 AND accept = %s",
            accept)
    assert sample(found, "metro_swipes_total", outcome="fraud") == 1
    assert sample(found, "metro_swipes_total", outcome="rejected") == 2
    assert sample(found, "metro_revenue_cents_total") == count(
        "SELECT coalesce(sum(amount), 0) FROM metro.card_events WHERE activity_code = 1")
    for name, table in (("metro_fraud_total", "fraud"), ("metro_alerts_total", "card_alert_export"),
                        ("metro_trips_total", "trips")):
        assert sample(found, name) == count(f"SELECT count(*) FROM metro.{table}") == 1
        assert sample(found, "metro_stream_delivered_total", stream=table) == 1
        assert sample(found, "metro_stream_pending_rows", stream=table) == 0
        assert sample(found, "metro_stream_lag_seconds", stream=table) == 0
    assert sample(found, "metro_payments_total", decision="blocked") == count(
        "SELECT count(*) FROM metro.risk_decisions WHERE blocked") == 1
    assert sample(found, "metro_payments_total", decision="approved") == count(
        "SELECT count(*) FROM metro.risk_decisions WHERE NOT blocked") == 2
    assert sample(found, "metro_inbound_dead_letters_total") == count(
        "SELECT count(*) FROM metro.bridge_dead_letters") == 1
    # Rolled up just before the scrape: the worker has nothing pending.
    sources = [row[0] for row in conn.execute("SELECT source FROM metro.worker_lag()")]
    assert sources and all(sample(found, "metro_worker_pending_rows", source=source) == 0
                           for source in sources)
    next_offset = count("SELECT next_offset FROM metro.bridge_inbound_offsets"
                        " WHERE topic = 'TRAINTOPIC' AND kafka_partition = 0")
    assert sample(found, "metro_inbound_next_offset", topic="TRAINTOPIC",
                  partition="0") == next_offset
    assert sample(found, "metro_inbound_applied_total", topic="TRAINTOPIC", partition="0") == 1
    assert sample(found, "metro_inbound_lag_messages", topic="TRAINTOPIC", partition="0") == 0

    # The database stops answering the dashboard's role: the scrape says so, and recovers.
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(reader_role)))
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                      " WHERE usename = %s", (reader_role,))
        down = families(dashboard.get("/metrics"))
        assert sample(down, "metro_database_up") == 0
        assert "metro_swipes" not in down
        admin.execute(sql.SQL("ALTER ROLE {} LOGIN").format(sql.Identifier(reader_role)))
    assert sample(families(dashboard.get("/metrics")), "metro_database_up") == 1
    assert dashboard.stop() == 0


def test_kafka_not_answering_shows_in_metrics(dashboard_db, reader_role, start_dashboard):
    dashboard = start_dashboard(as_user(dashboard_db, reader_role),
                                "--kafka", f"127.0.0.1:{free_port()}")
    found = families(dashboard.get("/metrics"))
    assert sample(found, "metro_kafka_up") == 0
    assert sample(found, "metro_database_up") == 1
    assert sample(found, "metro_swipes_total", outcome="accepted") == 0
    assert "metro_inbound_lag_messages" not in found
    # No worker, no bridge and no maintenance have run yet: no age to give.
    assert not {"metro_worker_heartbeat_age_seconds", "metro_maintenance_age_seconds",
                "metro_bridge_heartbeat_age_seconds"} & set(found)
    assert dashboard.get("/healthz") == "ok"
    snapshot = json.loads(dashboard.get("/api/snapshot"))
    assert snapshot["minute"]["swipes"] == 0 and len(snapshot["seconds"]) == 300
    assert dashboard.stop() == 0


def one_line_error(result: Any) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return str(lines[0])


def test_a_port_in_use_is_one_line(dashboard_db, reader_role):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_metro("dashboard", "--port", str(port),
                           dsn=as_user(dashboard_db, reader_role))
    assert one_line_error(result) == (f"metro: port {port} on 127.0.0.1 is in use; "
                                      "choose another with --port")
    assert result.stdout == ""


def test_a_database_that_does_not_answer_is_one_line():
    result = run_metro("dashboard", "--port", str(free_port()),
                       dsn=f"postgresql://nobody@127.0.0.1:{free_port()}/metro?connect_timeout=3")
    assert one_line_error(result).startswith("metro: cannot connect to PostgreSQL: ")


def test_a_role_without_metro_reader_is_refused(dashboard_db, server_dsn):
    with login_role(server_dsn, "dashboard_outsider") as name:
        result = run_metro("dashboard", "--port", str(free_port()),
                           dsn=as_user(dashboard_db, name))
    assert one_line_error(result) == (f"metro: role {name} is not a member of metro_reader "
                                      f"(GRANT metro_reader TO {name})")


def test_missing_views_are_named(db, conn, reader_role):
    conn.execute("DROP VIEW metro.dashboard_seconds")
    result = run_metro("dashboard", "--port", str(free_port()), dsn=as_user(db, reader_role))
    assert one_line_error(result) == (
        "metro: the database lacks the dashboard's views (dashboard_seconds); "
        "upgrade the schema with metro install")


def test_static_assets_ship_with_the_package():
    static = Path(metrics.__file__).with_name("static")
    assert sorted(p.name for p in static.iterdir()) == ["dashboard.css", "dashboard.js",
                                                         "index.html"]
    page = (static / "index.html").read_text()
    assert "http://" not in page and "https://" not in page   # no CDN: every asset is ours


def test_the_sample_grafana_dashboard_uses_exported_metrics_only():
    text = (PROJECT_ROOT / "docs" / "monitoring" / "grafana-dashboard.json").read_text()
    panels = json.loads(text)["panels"]
    used = {name for panel in panels for target in panel["targets"]
            for name in re.findall(r"\bmetro_[a-z_]+", target["expr"])}
    assert used and used <= set(metrics.DOCUMENTED), used - set(metrics.DOCUMENTED)
    scrape = (PROJECT_ROOT / "docs" / "monitoring" / "prometheus.yml").read_text()
    assert "metrics_path: /metrics" in scrape and '"127.0.0.1:8080"' in scrape
    assert "rule_files:\n  - alerts.yml" in scrape


def test_the_sample_alerts_use_exported_metrics_only():
    rules = (PROJECT_ROOT / "docs" / "monitoring" / "alerts.yml").read_text()
    exprs = re.findall(r"^\s+expr: (.+)$", rules, re.MULTILINE)
    alerts = re.findall(r"^\s+- alert: (\w+)$", rules, re.MULTILINE)
    assert len(exprs) == len(alerts) == 7
    used = {name for expr in exprs for name in re.findall(r"\bmetro_[a-z_]+", expr)}
    assert used <= set(metrics.DOCUMENTED), used - set(metrics.DOCUMENTED)
    assert {"metro_worker_heartbeat_age_seconds", "metro_maintenance_age_seconds"} <= used

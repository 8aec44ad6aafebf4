"""Prometheus metrics, read from the database (and Kafka, when configured) on each scrape.

Counters are totals the database keeps: entry swipes by outcome, card events and
payments by decision from the rollup's lifetime counters (station_totals and
payment_totals, which never fall when old history is dropped or delivered decisions
pruned); fraud rows, alerts, trips and payment decisions
from the streams as the bridge counts them (rows acknowledged by Kafka plus rows
pending, so rows pruned after delivery still count; pending is counted up to
queries.LAG_COUNT_LIMIT, so behind a larger backlog these totals stay below the truth
and catch up as it drains). Gauges: per
stream the rows pending (up to that limit) and the age of the oldest, per
inbound partition the next offset (and, with Kafka configured, the messages not yet
consumed), whether the database and Kafka answer, and how long ago the bridge and the
worker showed a sign of life and maintenance last ran.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from metro import kafka_clients, kafka_settings
from metro.errors import MetroError

from . import queries

log = logging.getLogger(__name__)

# Every metric this module can export, with its help text (README and tests read this).
DOCUMENTED = {
    "metro_database_up": "1 when the database answered this scrape, else 0",
    "metro_kafka_up": "1 when the configured Kafka broker answered this scrape, else 0",
    "metro_card_events_total": "Card events recorded (entries, exits, purchases)",
    "metro_swipes_total": "Entry swipes decided, by outcome (accepted, rejected, fraud)",
    "metro_revenue_cents_total": "Fares charged on accepted entries, in cents",
    "metro_fraud_total": "Rows written to the fraud stream (refused swipes and blocked recharges)",
    "metro_alerts_total": "Rows written to the card_alert_export stream",
    "metro_trips_total": "Rows written to the trips stream",
    "metro_payments_total": "Payments decided, by decision (approved, blocked), as rolled up",
    "metro_swipes_per_second": "Card events in the last complete second",
    "metro_acceptance_ratio": "Accepted entries / entries over the last minute",
    "metro_stream_delivered_total": "Stream rows acknowledged by Kafka, per stream",
    "metro_stream_pending_rows": "Committed stream rows not yet acknowledged by Kafka "
                                 f"(counted up to {queries.LAG_COUNT_LIMIT:,})",
    "metro_stream_lag_seconds": "Age of the oldest pending stream row (0 when none)",
    "metro_inbound_next_offset": "Next offset the bridge applies, per inbound topic partition",
    "metro_inbound_applied_total": "Inbound messages applied, per topic partition",
    "metro_inbound_dead_letters_total": "Inbound messages set aside as dead letters",
    "metro_inbound_lag_messages": "Messages on an inbound partition not yet applied "
                                  "(Kafka end offset - next offset; with Kafka configured)",
    "metro_bridge_heartbeat_age_seconds": "Seconds since the bridge last showed a sign of life",
    "metro_worker_pending_rows": "Committed source rows the worker has not rolled up yet "
                                 f"(counted up to {queries.LAG_COUNT_LIMIT:,})",
    "metro_worker_lag_seconds": "Age of the oldest source row not rolled up (0 when none)",
    "metro_worker_heartbeat_age_seconds": "Seconds since a worker last renewed its lease",
    "metro_maintenance_age_seconds": "Seconds since run_maintenance() last finished: without "
                                     "it, days ahead run out of partitions and nothing leaves "
                                     "by retention",
}

STREAM_COUNTERS = {"fraud": "metro_fraud_total", "card_alert_export": "metro_alerts_total",
                   "trips": "metro_trips_total"}


def _counter(name: str, labels: list[str] | None = None) -> CounterMetricFamily:
    # prometheus_client adds the _total suffix to the sample itself.
    return CounterMetricFamily(name.removesuffix("_total"), DOCUMENTED[name], labels=labels)


def _gauge(name: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, DOCUMENTED[name], labels=labels)


class MetroCollector(Collector):
    """Queries on every scrape through one connection (as metro_reader), reconnecting
    after a failure; a database that does not answer gives metro_database_up 0."""

    def __init__(self, connect: Callable[[], psycopg.Connection], kafka: str | None) -> None:
        self._connect = connect
        self._kafka = kafka
        if kafka is not None:
            kafka_settings.settings()  # a bad METRO_KAFKA_CONFIG stops the start, not a scrape
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()

    def _read(self) -> dict[str, Any] | None:
        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = self._connect()
                return queries.totals(self._conn)
            except (psycopg.Error, MetroError, OSError) as error:
                log.warning("metrics: database not answering: %s", " ".join(str(error).split()))
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                return None

    def _kafka_ends(self, pairs: list[tuple[str, int]]) -> dict[tuple[str, int], int] | None:
        """End offsets of the inbound partitions, or None when Kafka does not answer."""
        assert self._kafka is not None
        try:
            client = kafka_clients.consumer(self._kafka)
        except kafka_clients.KafkaNotAnswering:
            return None
        except MetroError as error:  # a refused login, a METRO_KAFKA_CONFIG changed since
            log.warning("metrics: %s", error)
            return None
        try:
            return kafka_clients.end_offsets(client, pairs) if pairs else {}
        except Exception as error:  # kafka-python raises many kinds; any means "not answering"
            log.warning("metrics: Kafka not answering: %s", error)
            return None
        finally:
            client.close()

    def collect(self) -> Iterator[Metric]:
        data = self._read()
        up = _gauge("metro_database_up")
        up.add_metric([], 1 if data is not None else 0)
        yield up
        inbound = data["inbound"] if data is not None else []
        if self._kafka is not None:
            ends = self._kafka_ends([(p["topic"], p["partition"]) for p in inbound])
            kafka_up = _gauge("metro_kafka_up")
            kafka_up.add_metric([], 1 if ends is not None else 0)
            yield kafka_up
        else:
            ends = None
        if data is None:
            return
        yield from self._database_metrics(data, ends)

    def _database_metrics(self, data: dict[str, Any],
                          ends: dict[tuple[str, int], int] | None) -> Iterator[Metric]:
        t = data["totals"]
        events = _counter("metro_card_events_total")
        events.add_metric([], t["swipes"])
        swipes = _counter("metro_swipes_total", ["outcome"])
        for outcome in ("accepted", "rejected", "fraud"):
            swipes.add_metric([outcome], t[outcome])
        revenue = _counter("metro_revenue_cents_total")
        revenue.add_metric([], t["revenue"])
        payments = _counter("metro_payments_total", ["decision"])
        payments.add_metric(["approved"], t["approved"])
        payments.add_metric(["blocked"], t["blocked"])
        yield from (events, swipes, revenue, payments)

        written = {s["stream"]: s["delivered"] + s["pending"] for s in data["streams"]}
        for stream, name in STREAM_COUNTERS.items():
            family = _counter(name)
            family.add_metric([], written.get(stream, 0))
            yield family

        minute = data["minute"]
        per_second = _gauge("metro_swipes_per_second")
        per_second.add_metric([], minute[0]["swipes"] if minute else 0)
        entries = sum(s["entries"] for s in minute)
        acceptance = _gauge("metro_acceptance_ratio")
        if entries:
            acceptance.add_metric([], sum(s["accepted"] for s in minute) / entries)
        yield from (per_second, acceptance)

        delivered = _counter("metro_stream_delivered_total", ["stream"])
        pending = _gauge("metro_stream_pending_rows", ["stream"])
        lag = _gauge("metro_stream_lag_seconds", ["stream"])
        for s in data["streams"]:
            delivered.add_metric([s["stream"]], s["delivered"])
            pending.add_metric([s["stream"]], s["pending"])
            lag.add_metric([s["stream"]], max(0.0, s["lag_seconds"] or 0.0))
        yield from (delivered, pending, lag)

        next_offset = _gauge("metro_inbound_next_offset", ["topic", "partition"])
        applied = _counter("metro_inbound_applied_total", ["topic", "partition"])
        dead = _counter("metro_inbound_dead_letters_total")
        behind = _gauge("metro_inbound_lag_messages", ["topic", "partition"])
        for p in data["inbound"]:
            labels = [p["topic"], str(p["partition"])]
            next_offset.add_metric(labels, p["next_offset"])
            applied.add_metric(labels, p["applied"])
            if ends is not None and (p["topic"], p["partition"]) in ends:
                behind.add_metric(labels, max(0, ends[(p["topic"], p["partition"])]
                                              - p["next_offset"]))
        dead.add_metric([], sum(p["dead_lettered"] for p in data["inbound"]))
        yield from (next_offset, applied, dead)
        if ends is not None:
            yield behind

        worker_pending = _gauge("metro_worker_pending_rows", ["source"])
        worker_lag = _gauge("metro_worker_lag_seconds", ["source"])
        for w in data["worker"]:
            worker_pending.add_metric([w["source"]], w["pending"])
            worker_lag.add_metric([w["source"]], max(0.0, w["lag_seconds"]))
        yield from (worker_pending, worker_lag)

        # Ages of what has happened at least once; absent before it has.
        ages = (("metro_bridge_heartbeat_age_seconds", data["bridge"], "heartbeat_age_seconds"),
                ("metro_worker_heartbeat_age_seconds", data["worker_state"],
                 "heartbeat_age_seconds"),
                ("metro_maintenance_age_seconds", data["worker_state"],
                 "maintenance_age_seconds"))
        for name, row, column in ages:
            if row is not None and row[column] is not None:
                age = _gauge(name)
                age.add_metric([], max(0.0, row[column]))
                yield age

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def registry(collector: MetroCollector) -> CollectorRegistry:
    """A registry with the metro collector alone (no process metrics of the server)."""
    result = CollectorRegistry(auto_describe=False)
    result.register(collector)
    return result

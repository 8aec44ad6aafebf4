"""`metro demo`: the whole system at work for a minute, in one command.

It starts (or reuses) the database and installs the schema, loads the line's
stations and trains and generated cards with the project's loader (cards already
loaded are kept), starts (or reuses) a Kafka broker or falls back to a JSON-lines
file (metro.demo_outbound), then runs the bridge and the trains, riders and
recharges simulators together while a live view (metro.dashboard) refreshes every
second. At the end, or on Ctrl-C, the simulators stop, the bridge forwards what is
left and stops, and a summary is printed. The database and the project's Kafka
broker are left running, so the next run starts at once.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

import psycopg

from metro import config, database, schema
from metro.errors import MetroError
from metro.topics import streams

from ..bridge.runner import Bridge, BridgeOptions, describe
from ..producers.engine import RunResult
from ..producers.events import Result
from ..producers.simulation import Simulation
from . import demo_outbound, demo_simulators, demo_view
from .demo_outbound import Outbound
from .demo_view import Baseline, Screen
from .sample_data import ensure_cards, load_reference_data

REFRESH_SECONDS = 1.0
DRAIN_SECONDS = 15.0        # how long the bridge may take to forward the last rows
STOP_SECONDS = 15.0         # how long a stopping thread may take


@dataclass(frozen=True)
class DemoOptions:
    seconds: float
    rate: float                 # entries per second
    cards: int
    kafka: str | None = None    # bootstrap servers; None: METRO_KAFKA or the project's broker

    def __post_init__(self) -> None:
        for option, value in (("--seconds", self.seconds), ("--rate", self.rate),
                              ("--cards", self.cards)):
            if not value > 0:
                raise MetroError(f"{option} must be positive, got {value:g}")


class StopRequests:
    """Ctrl-C or SIGTERM: the first asks for a clean stop, a second to hurry."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.count = 0

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        self.event.set()

    @contextmanager
    def installed(self) -> Iterator[None]:
        previous = {signum: signal.signal(signum, self) for signum in (signal.SIGINT,
                                                                      signal.SIGTERM)}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


class BridgeThread:
    """The bridge of bridge.runner on a thread; its messages go to the screen."""

    def __init__(self, dsn: str, outbound: Outbound, screen: Screen) -> None:
        self.stop = threading.Event()
        self.screen = screen
        options = BridgeOptions(dsn=dsn, kafka=outbound.kafka or "", poll_interval=0.5,
                                outbound_file=outbound.file)
        self.bridge = Bridge(options, self.stop, lambda text: screen.note(f"bridge: {text}"))
        self.thread = threading.Thread(target=self._run, name="metro-demo-bridge")

    def _run(self) -> None:
        try:
            self.bridge.run()
        except Exception as error:  # shown, not raised: the simulators go on
            self.screen.note(f"bridge: stopped: {describe(error, self.bridge.options.kafka)}")

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(STOP_SECONDS)


def say(text: str) -> None:
    print(text, flush=True)


def describe_database() -> str:
    if database.uses_embedded():
        server = database.embedded_server()
        return f"database: embedded PostgreSQL at {server.url()} (data {server.pgdata})"
    return "database: the PostgreSQL selected by METRO_DATABASE_URL or the PG* variables"


def prepare(conn: psycopg.Connection, options: DemoOptions) -> None:
    load_reference_data(conn)
    kept, generated = ensure_cards(conn, options.cards)
    if generated:
        say(f"cards: generated and loaded {generated}" + (f" (kept {kept})" if kept else ""))
    else:
        say(f"cards: reusing the {kept} cards already loaded")


def run(options: DemoOptions) -> int:
    dsn = database.conninfo()
    say(describe_database())
    say(f"schema: installed at revision {schema.install(dsn)}")
    # The bridge reports Kafka trouble itself, in one line.
    logging.getLogger("kafka").addHandler(logging.NullHandler())
    logging.getLogger("kafka").propagate = False
    # Kafka first: a broker that does not answer stops the demo before anything is written.
    outbound = demo_outbound.choose(options.kafka, say)
    with database.connect(dsn, autocommit=True) as conn:
        prepare(conn, options)
        simulations = demo_simulators.build(conn, rate=options.rate, seconds=options.seconds,
                                            cards=options.cards)
        for simulation in simulations:
            say(f"{simulation.name}: {simulation.describe()}")
        title = (f"metro demo: {options.rate:g} entries/s for {options.seconds:g} s, "
                 f"streams to {outbound.describe()}")
        say("")
        screen = Screen(sys.stdout, title)
        baseline = Baseline.take(conn)
        requests = StopRequests()
        with requests.installed():
            elapsed, results = watch(conn, dsn, simulations, outbound, screen, baseline, requests)
        say("")
        say(summary(conn, options, outbound, baseline, elapsed, results,
                    interrupted=requests.count > 0))
    return 130 if requests.count else 0


def watch(conn: psycopg.Connection, dsn: str, simulations: list[Simulation], outbound: Outbound,
          screen: Screen, baseline: Baseline,
          requests: StopRequests) -> tuple[float, list[RunResult]]:
    """Run the bridge and the simulators, refresh the view, stop everything cleanly."""
    bridge = BridgeThread(dsn, outbound, screen)
    simulators = demo_simulators.Simulators(dsn, simulations, screen.note)
    started = time.monotonic()

    def refresh() -> None:
        screen.show(demo_view.collect(conn, baseline, time.monotonic() - started))

    bridge.start()
    try:
        simulators.start()
        tick = started
        while simulators.running() and not requests.event.is_set():
            now = time.monotonic()
            if now >= tick:
                refresh()
                tick += REFRESH_SECONDS
            # Short waits: the end of the simulators is noticed at once.
            requests.event.wait(min(0.1, max(0.0, tick - now)))
        elapsed = time.monotonic() - started
        stopped_by = requests.count
        if stopped_by:
            simulators.stop()
        deadline = time.monotonic() + STOP_SECONDS
        while simulators.running() and time.monotonic() < deadline:
            if requests.count > stopped_by:  # another Ctrl-C: give up on calls in flight
                simulators.stop()
                stopped_by = requests.count
            simulators.join(0.2)
        results = simulators.join(0)
        drain(conn, requests, refresh)
        refresh()
    finally:
        simulators.stop()
        bridge.close()
    return elapsed, results


def pending(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT coalesce(sum(pending), 0) FROM metro.bridge_lag()").fetchone()
    return int(row[0]) if row else 0


def drain(conn: psycopg.Connection, requests: StopRequests,
          refresh: Callable[[], None]) -> None:
    """Let the bridge forward the rows written last; a further Ctrl-C skips the wait."""
    count = requests.count
    deadline = time.monotonic() + DRAIN_SECONDS
    while pending(conn) and time.monotonic() < deadline and requests.count == count:
        refresh()
        time.sleep(0.25)


CALLS = ("entry", "exit", "recharge", "train move")  # the summary's rows, in this order


def _counts(results: list[RunResult]) -> dict[str, dict[str, int]]:
    calls = {call: dict.fromkeys((r.value for r in Result), 0) for call in CALLS}
    for result in results:
        for call, outcomes in result.summary["by_call"].items():
            for outcome, count in outcomes.items():
                calls[call][outcome] += count
    return calls


def outcome_table(calls: dict[str, dict[str, int]]) -> list[str]:
    header = ["call", *(r.value for r in Result)]
    rows = [[call, *(str(outcomes[r.value]) for r in Result)] for call, outcomes in calls.items()]
    rows.append(["total", *(str(sum(outcomes[r.value] for outcomes in calls.values()))
                            for r in Result)])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return ["  ".join([row[0].ljust(widths[0]),
                       *(cell.rjust(width) for cell, width in zip(row[1:], widths[1:],
                                                                   strict=True))])
            for row in [header, *rows]]


def decided(outcomes: dict[str, int] | None) -> int:
    """Calls the database answered (each recorded a card event)."""
    if not outcomes:
        return 0
    return sum(count for outcome, count in outcomes.items() if outcome != Result.ERROR.value)


def summary(conn: psycopg.Connection, options: DemoOptions, outbound: Outbound,
            baseline: Baseline, elapsed: float, results: list[RunResult],
            interrupted: bool) -> str:
    calls = _counts(results)
    entries, exits, recharges = (decided(calls.get(name)) for name in ("entry", "exit",
                                                                        "recharge"))
    fraud_found = calls.get("entry", {}).get(Result.FRAUD.value, 0)
    written = {stream.table: baseline.written(conn, stream.table) for stream in streams(conn)}
    # Every stream the bridge forwards, with its topic: delivered since the start, pending.
    lag = [(topic, delivered - baseline.delivered.get(stream, 0), waiting)
           for stream, topic, delivered, waiting in conn.execute(
               "SELECT stream, topic, delivered, pending FROM metro.bridge_lag()")]
    delivered = sum(count for _, count, _ in lag)
    per_topic = ", ".join(f"{topic} {count}" for topic, count, _ in lag)
    riders = next((r.summary for r in results if r.summary["target"] == "entries"), None)

    how = "stopped by Ctrl-C after" if interrupted else "ran"
    lines = [f"summary: {how} {elapsed:.1f} s at {options.rate:g} entries/s offered"
             + (f" ({riders['achieved_rate']:.1f}/s achieved)" if riders else ""), "",
             *outcome_table(calls), "",
             f"card events: {entries + exits + recharges} recorded (entries {entries}, "
             f"exits {exits}, recharges {recharges})",
             f"fraud found: {fraud_found} entries refused as fraud, {written['fraud']} fraud rows",
             f"trips: {written['trips']}   alerts: {written['card_alert_export']}"
             "   (stream rows written during the demo)"]
    if outbound.kafka:
        lines.append(f"delivered to Kafka at {outbound.kafka}: {delivered} rows ({per_topic})")
    else:
        lines.append(f"appended to {outbound.file}: {delivered} rows ({per_topic})")
    waiting = sum(count for _, _, count in lag)
    if waiting:
        lines.append(f"not yet forwarded: {waiting} rows; a row goes out once every older "
                     "transaction on the server has ended (`metro bridge --status`), and the "
                     "next bridge (`metro bridge` or `metro demo`) forwards them")
    if riders:
        latency = riders["latency_ms"]
        lines.append(f"riders' calls, from their scheduled send: p50 {latency['p50']:.2f} ms, "
                     f"p99 {latency['p99']:.2f} ms"
                     + ("" if riders["rate_kept"] else "; the offered rate was NOT kept"))
    left = []
    if database.uses_embedded():
        left.append("the embedded PostgreSQL (`metro db stop`)")
    if outbound.local_broker:
        left.append("the Kafka broker (`metro kafka stop`)")
    if left:
        lines.append(f"left running for the next run: {' and '.join(left)}; data under "
                     f"{config.metro_home()}")
    return "\n".join(lines)

"""`metro demo`: the whole system at work for a minute, in one command.

It starts (or reuses) the database and installs the schema, loads the line's
stations and trains and generated cards with the project's loader (cards already
loaded are kept), starts (or reuses) a Kafka broker or falls back to a JSON-lines
file (metro.app.demo_outbound), then runs the bridge, the worker and the trains,
riders and recharges simulators together while a live view (metro.app.demo_view) refreshes every
second. The dashboard (app/web) is served on 127.0.0.1 meanwhile, its URL printed
before the view. The load begins once the bridge holds its lease, and the elapsed
time and latencies count from then. At the end, or on Ctrl-C, the simulators stop,
the bridge forwards what is left and stops, the dashboard stops, and a summary is
printed. The database and the project's Kafka broker are left running, so the next
run starts at once.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg

from metro import config, database, kafka_clients, schema
from metro.errors import MetroError
from metro.service_cli import positive, tcp_port
from metro.stop_signals import StopSignals
from metro.topics import streams

from ..bridge.runner import Bridge, BridgeOptions, describe
from ..producers.engine import RunResult
from ..producers.events import Result
from ..producers.simulation import Simulation
from ..worker.runner import Worker, WorkerOptions, run_once
from . import demo_outbound, demo_simulators, demo_view
from .demo_outbound import Outbound
from .demo_view import Baseline, Screen
from .sample_data import ensure_cards, load_reference_data

REFRESH_SECONDS = 1.0
DRAIN_SECONDS = 15.0        # how long the bridge may take to forward the last rows
STOP_SECONDS = 15.0         # how long a stopping thread may take
BRIDGE_READY_SECONDS = 15.0  # how long the load waits for the bridge to hold its lease
DASHBOARD_HOST = "127.0.0.1"
DASHBOARD_PORT = 8080
DASHBOARD_PORTS_TRIED = 20  # from the wanted port up


@dataclass(frozen=True)
class DemoOptions:
    seconds: float
    rate: float                 # entries per second
    cards: int
    kafka: str | None = None    # bootstrap servers; None: METRO_KAFKA or the project's broker
    dashboard: bool = True
    dashboard_port: int | None = None  # None: the first free port from DASHBOARD_PORT up


class ServiceThread:
    """A long-running service (the bridge, the worker) on a thread; its messages go to the
    screen under its name. `ready` is set once it holds its lease."""

    def __init__(self, name: str, service: Callable[[threading.Event, Callable[[str], None]],
                                                    Bridge | Worker],
                 screen: Screen, error_text: Callable[[BaseException], str]) -> None:
        self.name = name
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.screen = screen
        self.error_text = error_text
        self.service = service(self.stop, self._say)
        self.thread = threading.Thread(target=self._run, name=f"metro-demo-{name}")

    def _say(self, text: str) -> None:
        self.screen.note(f"{self.name}: {text}")
        if text.startswith("holding the lease"):
            self.ready.set()

    def _run(self) -> None:
        try:
            self.service.run()
        except Exception as error:  # shown, not raised: the simulators go on
            self.screen.note(f"{self.name}: stopped: {self.error_text(error)}")

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(STOP_SECONDS)


def bridge_thread(dsn: str, outbound: Outbound, screen: Screen) -> ServiceThread:
    options = BridgeOptions(dsn=dsn, kafka=outbound.kafka or "", poll_interval=0.5,
                            outbound_file=outbound.file)
    return ServiceThread("bridge", lambda stop, say: Bridge(options, stop, say), screen,
                         lambda error: describe(error, options.kafka))


def worker_thread(dsn: str, screen: Screen) -> ServiceThread:
    """The worker keeps the per-second history and the views current while the demo runs."""
    options = WorkerOptions(dsn=dsn)
    return ServiceThread("worker", lambda stop, say: Worker(options, stop, say), screen, str)


class ScreenLog(logging.Handler):
    """Warnings of metro's own loggers (a dead-lettered message...) and the dashboard's web
    server, shown as notes of the view instead of lines through it."""

    LOGGERS = ("metro", "uvicorn.error")

    def __init__(self, screen: Screen) -> None:
        super().__init__(logging.WARNING)
        self.screen = screen

    def emit(self, record: logging.LogRecord) -> None:
        name = record.name.removeprefix("metro.")
        self.screen.note(f"{name}: {record.getMessage()}")

    @contextmanager
    def installed(self) -> Iterator[None]:
        loggers = [logging.getLogger(name) for name in self.LOGGERS]
        previous = [logger.propagate for logger in loggers]
        for logger in loggers:
            logger.addHandler(self)
            logger.propagate = False
        try:
            yield
        finally:
            for logger, propagate in zip(loggers, previous, strict=True):
                logger.removeHandler(self)
                logger.propagate = propagate


class Dashboard:
    """The dashboard of app/web (metro dashboard) on a thread, on 127.0.0.1: the wanted port,
    or the next free one. It reads as metro_reader, like `metro dashboard`."""

    def __init__(self, dsn: str, kafka: str | None, port: int | None) -> None:
        import uvicorn  # the web stack is imported only when the dashboard runs

        from .web import server

        kafka_clients.quiet_kafka_logging()
        server.check_database(dsn)
        self.wanted = port or DASHBOARD_PORT
        self.sock, self.port = self._bind(server, self.wanted)
        config = uvicorn.Config(server.create_app(dsn, kafka), log_config=None,
                                log_level="warning", access_log=False,
                                timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="metro-demo-dashboard", daemon=True)

    @staticmethod
    def _bind(server: Any, wanted: int) -> tuple[Any, int]:
        for port in range(wanted, min(wanted + DASHBOARD_PORTS_TRIED, 65536)):
            try:
                return server.bind(DASHBOARD_HOST, port), port
            except server.DashboardError as error:
                if "in use" not in str(error):
                    raise
        raise MetroError(f"ports {wanted} to {wanted + DASHBOARD_PORTS_TRIED - 1} on "
                         f"{DASHBOARD_HOST} are all in use: choose one with --dashboard-port, "
                         "or --no-dashboard")

    @property
    def url(self) -> str:
        return f"http://{DASHBOARD_HOST}:{self.port}/"

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(STOP_SECONDS)
        self.sock.close()


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


def title(options: DemoOptions, outbound: Outbound) -> str:
    return (f"metro demo: {options.rate:g} entries/s for {options.seconds:g} s; trains run the "
            f"line {demo_simulators.TIME_SCALE}x faster than data/line.csv and rides are "
            f"{demo_simulators.TIME_SCALE}x shorter; the clock is real; streams to "
            f"{outbound.describe()}")


def start_dashboard(dsn: str, options: DemoOptions, outbound: Outbound) -> Dashboard | None:
    """The dashboard, started, its URL said; None with --no-dashboard, or (said) when it
    cannot start: the demo goes on without it."""
    if not options.dashboard:
        return None
    try:
        dashboard = Dashboard(dsn, outbound.kafka, options.dashboard_port)
    except MetroError as error:
        say(f"dashboard: not started: {error}")
        return None
    if dashboard.port != dashboard.wanted:
        say(f"dashboard: port {dashboard.wanted} is in use; using {dashboard.port} instead")
    dashboard.start()
    say(f"dashboard: {dashboard.url} (the live page; Prometheus metrics at "
        f"{dashboard.url}metrics), open while the demo runs")
    return dashboard


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

        def simulations() -> list[Simulation]:
            return demo_simulators.build(conn, rate=options.rate, seconds=options.seconds,
                                         cards=options.cards)

        # Built once to check the data and say what will run; built again when the load
        # begins, so that the simulated clock starts then.
        for simulation in simulations():
            say(f"{simulation.name}: {demo_simulators.describe(simulation)}")
            for warning in getattr(simulation, "warnings", list)():
                say(f"{simulation.name}: warning: {warning}")
        dashboard = start_dashboard(dsn, options, outbound)
        say("")
        screen = Screen(sys.stdout, title(options, outbound))
        baseline = Baseline.take(conn)
        requests = StopSignals()
        try:
            with requests.installed(), ScreenLog(screen).installed():
                watched = watch(conn, dsn, simulations, outbound, screen, baseline, requests,
                                options.seconds)
        finally:
            if dashboard is not None:
                dashboard.close()
        say("")
        say(summary(conn, options, outbound, baseline, watched, interrupted=requests.count > 0,
                    dashboard=dashboard))
    return 130 if requests.count else 0


@dataclass
class Watched:
    """What watch() saw: how long the load ran, the runs' results, the simulations."""
    elapsed: float
    results: list[RunResult]
    simulations: list[Simulation]
    waited_for_bridge: float


def watch(conn: psycopg.Connection, dsn: str, simulations: Callable[[], list[Simulation]],
          outbound: Outbound, screen: Screen, baseline: Baseline, requests: StopSignals,
          seconds: float) -> Watched:
    """Run the bridge, then the simulators once it holds its lease; refresh the view; stop
    everything cleanly."""
    bridge = bridge_thread(dsn, outbound, screen)
    worker = worker_thread(dsn, screen)
    bridge.start()
    worker.start()
    waited = time.monotonic()
    try:
        # The load begins once the bridge is up: its start does not count in the latencies.
        while not (bridge.ready.is_set() or requests.event.is_set()
                   or time.monotonic() - waited > BRIDGE_READY_SECONDS):
            bridge.ready.wait(0.1)
        waited = time.monotonic() - waited
        if not bridge.ready.is_set() and not requests.event.is_set():
            screen.note(f"bridge: not up after {BRIDGE_READY_SECONDS:g} s; starting the load "
                        "anyway")
        built = simulations()
        simulators = demo_simulators.Simulators(dsn, built, screen.note)
        started = time.monotonic()
        stopped_at: float | None = None

        def refresh() -> None:
            elapsed = (stopped_at or time.monotonic()) - started
            remaining = 0.0 if stopped_at else max(0.0, seconds - elapsed)
            screen.show(demo_view.collect(conn, baseline, elapsed, remaining))

        try:
            if not requests.event.is_set():
                simulators.start()
            tick = started
            while simulators.running() and not requests.event.is_set():
                now = time.monotonic()
                if now >= tick:
                    refresh()
                    tick += REFRESH_SECONDS
                # Short waits: the end of the simulators is noticed at once.
                requests.event.wait(min(0.1, max(0.0, tick - now)))
            stopped_at = time.monotonic()
            elapsed = stopped_at - started
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
            screen.footer = ("the load has stopped; the last swipes go into the history "
                             "and the bridge forwards the last rows (Ctrl-C skips the wait)")
            worker.close()

            def skipped() -> bool:  # a Ctrl-C since the load stopped skips both waits
                return requests.count > stopped_by

            # The last swipes into the history before the view's last refresh reads it.
            run_once(dsn, stop=skipped)
            drain(conn, skipped, refresh)
            screen.footer = "done"
            refresh()
        finally:
            simulators.stop()
    finally:
        worker.close()
        bridge.close()
    return Watched(elapsed, results, built, waited)


def pending(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT coalesce(sum(pending), 0) FROM metro.bridge_lag()").fetchone()
    return int(row[0]) if row else 0


def drain(conn: psycopg.Connection, skipped: Callable[[], bool],
          refresh: Callable[[], None]) -> None:
    """Let the bridge forward the rows written last, until skipped() (a further Ctrl-C)."""
    deadline = time.monotonic() + DRAIN_SECONDS
    while pending(conn) and time.monotonic() < deadline and not skipped():
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


def reasons(results: list[RunResult]) -> list[str]:
    """Why calls were not accepted, per call: `recharge rejected 14: Card Disabled 9, Card
    Invalid 5`."""
    merged: dict[str, dict[str, dict[str, int]]] = {}
    for result in results:
        for call, outcomes in result.summary.get("reasons", {}).items():
            for outcome, messages in outcomes.items():
                into = merged.setdefault(call, {}).setdefault(outcome, {})
                for message, count in messages.items():
                    into[message] = into.get(message, 0) + count
    lines = []
    for call in CALLS:
        for outcome in (Result.REJECTED.value, Result.ERROR.value):
            messages = merged.get(call, {}).get(outcome)
            if messages:
                ordered = sorted(messages.items(), key=lambda item: (-item[1], item[0]))
                lines.append(f"  {call} {outcome} {sum(messages.values())}: "
                             + ", ".join(f"{message or '(no message)'} {count}"
                                         for message, count in ordered))
    return ["why calls were not accepted:", *lines] if lines else []


def summary(conn: psycopg.Connection, options: DemoOptions, outbound: Outbound,
            baseline: Baseline, watched: Watched, interrupted: bool,
            dashboard: Dashboard | None = None) -> str:
    results = watched.results
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
    lines = [f"summary: {how} {watched.elapsed:.1f} s at {options.rate:g} entries/s offered"
             + (f" ({riders['achieved_rate']:.1f}/s achieved)" if riders else ""), "",
             *outcome_table(calls), "", *reasons(results)]
    lines += [f"card events: {entries + exits + recharges} recorded (entries {entries}, "
              f"exits {exits}, recharges {recharges})",
              f"fraud found: {fraud_found} entries refused as fraud, {written['fraud']} fraud "
              "rows",
              f"trips: {written['trips']}   alerts: {written['card_alert_export']}"
              "   (stream rows written during the demo)"]
    for simulation in watched.simulations:
        if simulation.name == "riders":
            lines += simulation.summary_lines()
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
        lines.append(latency_line(riders, watched.waited_for_bridge))
    if dashboard is not None:
        lines.append(f"dashboard: stopped ({dashboard.url}); `metro dashboard` serves it "
                     "on its own")
    left = []
    if database.uses_embedded():
        left.append("the embedded PostgreSQL (`metro db stop`)")
    if outbound.local_broker:
        left.append("the Kafka broker (`metro kafka stop`)")
    if left:
        lines.append(f"left running for the next run: {' and '.join(left)}; data under "
                     f"{config.metro_home()}")
    return "\n".join(lines)


def latency_line(riders: dict[str, Any], waited: float) -> str:
    """Riders' latency, said to count from the load's start (after the bridge came up)."""
    latency = riders["latency_ms"]
    text = (f"riders' calls, from their scheduled send (the load began once the bridge held "
            f"its lease, {waited:.1f} s after it started): p50 {latency['p50']:.2f} ms, "
            f"p99 {latency['p99']:.2f} ms, max {latency['max']:.2f} ms")
    worst = riders.get("worst_interval")
    if worst and worst["p99_ms"] > 2 * latency["p99"]:
        text += (f"; the slowest second ended {worst['ended_at_s']:.0f} s in, p99 "
                 f"{worst['p99_ms']:.2f} ms")
    if not riders["rate_kept"]:
        text += "; the offered rate was NOT kept"
    return text


def add_parser(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="run the whole system for a minute with a live view: "
                                       "simulated riders, trains and recharges, bridge, Kafka, "
                                       "dashboard")
    demo.add_argument("--seconds", type=positive(float), default=60.0, metavar="S",
                      help="how long the simulators run (default %(default)g)")
    demo.add_argument("--rate", type=positive(float), default=300.0, metavar="R",
                      help="entry swipes per second (default %(default)g)")
    demo.add_argument("--cards", type=positive(int), default=100_000, metavar="N",
                      help="cards to ride with; missing ones are generated and loaded; an "
                           "honest card enters at most 5 times an hour, so a run needs about "
                           "R x S / 5 of them (default %(default)d)")
    demo.add_argument("--kafka", metavar="HOST:PORT",
                      help="Kafka bootstrap servers (default METRO_KAFKA, else the project's "
                           "broker when Java is there, else a JSON-lines file)")
    demo.add_argument("--dashboard-port", type=tcp_port(), metavar="PORT",
                      help=f"serve the dashboard on {DASHBOARD_HOST}:PORT, or the next free "
                           f"port (default {DASHBOARD_PORT})")
    demo.add_argument("--no-dashboard", dest="dashboard", action="store_false",
                      help="do not serve the dashboard")
    demo.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    return run(DemoOptions(seconds=args.seconds, rate=args.rate, cards=args.cards,
                           kafka=args.kafka, dashboard=args.dashboard,
                           dashboard_port=args.dashboard_port))

"""The `producers` command: generate cards, and simulate trains, riders, recharges and
payments against the stored functions (or through Kafka) with live statistics."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sys
import textwrap
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psycopg

from metro import config, database
from metro.errors import MetroError
from metro.service_cli import at_least, number, positive

from . import cards, line, reference
from .engine import Run
from .kafka_sink import FORMATS, KafkaSink
from .payments import Payments
from .recharges import Recharges
from .riders import UNKNOWN_SHARE, FraudRules, Riders, recent_history
from .simulation import REAL_CLOCK, Simulation
from .sinks import MODES, DirectSink, Sink
from .stats import format_summary
from .trains import Trains

VIAS = ("direct", "kafka")
DEFAULT_CONNECTIONS = {"pipeline": 4, "async": 16}


def report(message: str) -> None:
    print(f"producers: {message}", file=sys.stderr, flush=True)


def cmd_cards(args: argparse.Namespace) -> int:
    generated = cards.generate(args.count, args.as_of, seed=args.seed, first_id=args.first_id)
    if args.output == "-":
        mix = cards.write_csv(generated, sys.stdout, args.as_of)
        where = "standard output"
    else:
        try:
            with open(args.output, "w", newline="") as handle:
                mix = cards.write_csv(generated, handle, args.as_of)
        except OSError as error:
            raise MetroError(f"cannot write {args.output}: {error.strerror}") from None
        where = args.output
    report(f"wrote {mix['cards']} cards to {where}: {mix['pay-per-ride']} pay-per-ride, "
           f"{mix['unlimited']} unlimited ({mix['expired']} expired), {mix['disabled']} disabled;"
           f" alerts: {mix['no alerts']} none, {mix['e-mail alerts']} e-mail,"
           f" {mix['text alerts']} text")
    return 0


def _horizon(args: argparse.Namespace) -> float:
    return float("inf") if args.duration == 0 else args.duration


def _rng(args: argparse.Namespace) -> random.Random:
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**31)
    return random.Random(args.seed)


def build_trains(conn: psycopg.Connection, args: argparse.Namespace) -> Simulation:
    timing = line.load_line(args.line)
    reference.check_line_stations(conn, timing.stations)
    trains = reference.check_trains(conn, args.trains)
    return Trains(trains, timing, REAL_CLOCK, _horizon(args), args.speedup)


def build_riders(conn: psycopg.Connection, args: argparse.Namespace) -> Simulation:
    timing = line.load_line(args.line)
    reference.check_line_stations(conn, timing.stations)
    stations = reference.load_stations(conn)
    for station in stations.items:
        timing.position(station)  # every station riders may use must be on the line
    cards = reference.load_cards(conn, args.cards)
    rules = FraudRules.read(conn)
    return Riders(rate=args.rate, cards=cards, stations=stations, line=timing,
                  start_ts=REAL_CLOCK, horizon=_horizon(args), rng=_rng(args),
                  speedup=args.speedup, fraud_ratio=args.fraud_ratio,
                  unknown_share=args.unknown_share, rules=rules,
                  history=recent_history(conn, cards.ids, rules))


def build_recharges(conn: psycopg.Connection, args: argparse.Namespace) -> Simulation:
    return Recharges(rate=args.rate, cards=reference.load_cards(conn, args.cards),
                     stations=reference.load_stations(conn), start_ts=REAL_CLOCK,
                     horizon=_horizon(args), rng=_rng(args))


def build_payments(conn: psycopg.Connection | None, args: argparse.Namespace) -> Simulation:
    return Payments(rate=args.rate, accounts=args.accounts, start_ts=REAL_CLOCK,
                    horizon=_horizon(args), rng=_rng(args))


def _simulation(args: argparse.Namespace) -> Simulation:
    """The simulation, after reading the reference data it draws from (if any)."""
    try:
        if not args.reference:
            return args.build(None, args)
        with database.connect(autocommit=True) as conn:
            return args.build(conn, args)
    except ValueError as error:
        raise MetroError(str(error)) from None


def _sink(args: argparse.Namespace) -> tuple[Sink, str]:
    """The sink of --via and how to describe it."""
    if args.via == "kafka":
        bootstrap = config.kafka_servers(args.kafka)
        return (KafkaSink(bootstrap, fmt=args.format or args.default_format,
                          max_in_flight=args.max_in_flight),
                f"{args.format or args.default_format} messages to Kafka at {bootstrap}")
    connections = args.connections or DEFAULT_CONNECTIONS[args.mode]
    return (DirectSink(database.conninfo(), mode=args.mode, connections=connections,
                       max_in_flight=args.max_in_flight, report=report),
            f"{args.mode} mode over {connections} connections")


def cmd_simulate(args: argparse.Namespace) -> int:
    if args.via not in args.vias:
        raise MetroError(f"{args.command} cannot go --via {args.via}: they need each "
                         "entry's answer to schedule the exit (use --via direct)")
    simulation = _simulation(args)
    sink, transport = _sink(args)
    print(describe(args, simulation, transport), flush=True)
    for warning in getattr(simulation, "warnings", list)():
        print(wrap(f"warning: {warning}"), flush=True)
    run = Run(simulation, sink, display_interval=args.display_interval,
              print_line=lambda text: print(text, flush=True), published=args.via == "kafka")
    result = asyncio.run(run.run())
    notes = simulation.summary_lines()
    if result.interrupted:
        notes.insert(0, "stopped by Ctrl-C")
    print("\n" + format_summary(args.command, result.summary), flush=True)
    for note in notes:
        print(note, flush=True)
    if args.stats_file:
        document = {"command": args.command, "options": _options(args),
                    "interrupted": result.interrupted, "notes": notes, **result.summary}
        try:
            Path(args.stats_file).write_text(json.dumps(document, indent=2) + "\n")
        except OSError as error:
            raise MetroError(f"cannot write {args.stats_file}: {error.strerror}") from None
    if result.interrupted:
        return 130
    return _failed_calls(result.summary)


def _failed_calls(summary: dict[str, Any]) -> int:
    """1, with one line on standard error, when calls failed: a script running a
    simulation must not take a run with errors for a clean one."""
    failed = summary["outcomes"]["errors"]
    if not failed:
        return 0
    report(f"{failed} of {summary['calls']} calls failed (their messages are counted above)")
    return 1


def _options(args: argparse.Namespace) -> dict[str, Any]:
    hidden = {"func", "build", "command", "reference", "vias", "default_format"}
    return {key: (str(value) if isinstance(value, Path) else value)
            for key, value in vars(args).items() if key not in hidden}


def wrap(text: str) -> str:
    """One paragraph, broken between words at the terminal's width, continuation lines
    indented; off a terminal one line, as logs and grep want it."""
    if not sys.stdout.isatty():
        return text
    width = shutil.get_terminal_size((80, 24)).columns
    return textwrap.fill(text, width=max(40, width - 1), subsequent_indent="  ",
                         break_long_words=False, break_on_hyphens=False)


def describe(args: argparse.Namespace, simulation: Simulation, transport: str) -> str:
    """The first lines of a run: what it sends, how long, through what; built in one
    piece and wrapped between words."""
    until = "until Ctrl-C" if args.duration == 0 else f"for {args.duration:g} s"
    seed = f"; seed {args.seed}" if args.seed is not None else ""
    every = f"; statistics every {args.display_interval:g} s"
    return wrap(f"{args.command}: {simulation.describe()}; {until}; {transport}{seed}{every}")


def _share(text: str) -> float:
    value = float(number(float, text))
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1: {text}")
    return value


def _via(text: str) -> str:
    if text not in VIAS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not available; supported: direct (call the functions), kafka "
            "(publish to the bridge's inbound topics)")
    return text


def _add_run_options(parser: argparse.ArgumentParser, duration: float = 60, *,
                     vias: tuple[str, ...] = VIAS, default_format: str = "csv",
                     reference: bool = True) -> None:
    parser.add_argument("--duration", type=at_least(0, float), default=duration, metavar="S",
                        help="seconds to run; 0 runs until Ctrl-C (default %(default)s)")
    parser.add_argument("--display-interval", type=positive(float), default=5.0, metavar="S",
                        help="seconds between live statistics lines (default %(default)s)")
    parser.add_argument("--stats-file", metavar="PATH",
                        help="also write the final summary as JSON to PATH (options, counts "
                             "per call and message, percentiles)")
    if len(vias) > 1:
        parser.add_argument("--via", type=_via, default="direct",
                            metavar="{" + ",".join(vias) + "}",
                            help="how events reach the system: direct calls the functions, "
                                 "kafka publishes to the bridge's inbound topics and counts a "
                                 "message as published, not accepted (default %(default)s)")
        parser.add_argument("--kafka", metavar="HOST:PORT",
                            help="with --via kafka: bootstrap servers (default METRO_KAFKA, "
                                 "else the broker of `metro kafka start`)")
        parser.add_argument("--format", choices=FORMATS,
                            help="with --via kafka: message values as CSV lines or JSON "
                                 f"objects, one of {', '.join(FORMATS)} (default "
                                 f"{default_format})")
    else:
        parser.add_argument("--via", type=_via, default="direct", metavar="{direct}",
                            help="direct: call the functions, the only way for these events "
                                 "(default %(default)s)")
        parser.set_defaults(kafka=None, format=None)
    parser.add_argument("--mode", choices=MODES, default="pipeline",
                        help="with --via direct, one of pipeline (libpq pipeline mode, calls "
                             "sent without waiting for answers) or async (one call at a time "
                             "per connection) (default %(default)s)")
    parser.add_argument("--connections", type=positive(int), metavar="N",
                        help="with --via direct: database connections (default 4 in pipeline "
                             "mode, 16 in async mode)")
    parser.add_argument("--max-in-flight", type=positive(int), default=10_000, metavar="N",
                        help="calls sent and not yet answered, at most (default %(default)s)")
    parser.set_defaults(vias=vias, default_format=default_format, reference=reference)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="producers", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    generate = sub.add_parser("cards", help="write a cards CSV with the documented mix")
    generate.add_argument("--count", type=positive(int), required=True, metavar="N",
                          help="how many cards to write")
    generate.add_argument("--output", default="-", metavar="PATH",
                          help="CSV file to write (default: standard output)")
    generate.add_argument("--seed", type=int, help="same seed, same cards (default: random)")
    generate.add_argument("--first-id", type=at_least(0), default=1, metavar="ID",
                          help="card_id of the first card, 0 or more as in the cards table "
                               "(default %(default)s)")
    generate.add_argument("--as-of", type=date.fromisoformat, default=datetime.now(UTC).date(),
                          metavar="YYYY-MM-DD",
                          help="reference date for expiry dates (default: today, UTC)")
    generate.set_defaults(func=cmd_cards)

    trains = sub.add_parser("trains", help="move trains along the line (record_train_event)")
    trains.add_argument("--trains", type=positive(int), default=8, metavar="N",
                        help="trains 1..N (default %(default)s)")
    trains.add_argument("--speedup", type=positive(float), default=1.0, metavar="X",
                        help="travel and dwell times divided by X, so trains move X times "
                             "faster; their timestamps stay on the real clock "
                             "(default %(default)g)")
    trains.add_argument("--line", type=Path, default=line.LINE_CSV, metavar="CSV",
                        help="line timing (default data/line.csv)")
    _add_run_options(trains)
    trains.set_defaults(func=cmd_simulate, build=build_trains, seed=None)

    riders = sub.add_parser("riders", help="entries and exits at the turnstiles")
    riders.add_argument("--rate", type=positive(float), default=1000.0, metavar="R",
                        help="entry swipes per second (default %(default)s)")
    riders.add_argument("--cards", type=positive(int), metavar="N",
                        help="use the first N cards by card_id (default: all); an honest card "
                             "enters at most 5 times an hour (the fraud rules' thresholds), so "
                             "a run needs about R x min(duration, 3600) / 5 cards")
    riders.add_argument("--fraud-ratio", type=_share, default=0.01, metavar="F",
                        help="share of entries made by cloned cards, in bursts of 6 that the "
                             "fraud rules catch (default %(default)s)")
    riders.add_argument("--unknown-share", type=_share, default=UNKNOWN_SHARE, metavar="U",
                        help="share of the other entries made with unknown cards "
                             "(default %(default)s)")
    riders.add_argument("--speedup", type=positive(float), default=1.0, metavar="X",
                        help="divide ride times by X (a second at least), so exits come "
                             "sooner; timestamps stay on the real clock (default %(default)g: "
                             "rides of 90 s to 34 min, so no exit in a short run)")
    riders.add_argument("--seed", type=int,
                        help="seed of the random choices (default: a random one, printed)")
    riders.add_argument("--line", type=Path, default=line.LINE_CSV, metavar="CSV",
                        help="line timing, for ride times (default data/line.csv)")
    _add_run_options(riders, vias=("direct",))
    riders.set_defaults(func=cmd_simulate, build=build_riders)

    recharges = sub.add_parser("recharges", help="recharges at ticket machines")
    recharges.add_argument("--rate", type=positive(float), default=10.0, metavar="R",
                           help="recharges per second (default %(default)s)")
    recharges.add_argument("--cards", type=positive(int), metavar="N",
                           help="use the first N cards by card_id (default: all)")
    recharges.add_argument("--seed", type=int,
                           help="seed of the random choices (default: a random one, printed)")
    _add_run_options(recharges)
    recharges.set_defaults(func=cmd_simulate, build=build_recharges)

    payments = sub.add_parser(
        "payments", help="payments around the risk rules' boundaries (evaluate_transaction)")
    payments.add_argument("--rate", type=positive(float), default=100.0, metavar="R",
                          help="payments per second (default %(default)s)")
    payments.add_argument("--accounts", type=positive(int), default=1000, metavar="N",
                          help="pay from accounts 1..N; their risk tags are whatever "
                               "metro.risk_tags says (default %(default)s)")
    payments.add_argument("--seed", type=int,
                          help="seed of the random choices (default: a random one, printed)")
    _add_run_options(payments, default_format="json", reference=False)
    payments.set_defaults(func=cmd_simulate, build=build_payments)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except MetroError as error:
        print(f"producers: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into a command that stopped reading
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""The `producers` command: generate cards, and simulate trains, riders and recharges
against the stored functions with live statistics."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psycopg

from metro import database
from metro.errors import MetroError
from producers import cards, line, reference
from producers.engine import Run
from producers.recharges import Recharges
from producers.riders import UNKNOWN_SHARE, Riders
from producers.simulation import Simulation
from producers.sinks import MODES, DirectSink
from producers.stats import format_summary
from producers.trains import Trains

VIAS = ("direct",)  # a Kafka sink (--via kafka) plugs in next to DirectSink
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
    return Trains(trains, timing, datetime.now(UTC), _horizon(args), args.speedup)


def build_riders(conn: psycopg.Connection, args: argparse.Namespace) -> Simulation:
    timing = line.load_line(args.line)
    reference.check_line_stations(conn, timing.stations)
    stations = reference.load_stations(conn)
    for station in stations.items:
        timing.position(station)  # every station riders may use must be on the line
    return Riders(rate=args.rate, cards=reference.load_cards(conn, args.cards),
                  stations=stations, line=timing, start_ts=datetime.now(UTC),
                  horizon=_horizon(args), rng=_rng(args), speedup=args.speedup,
                  fraud_ratio=args.fraud_ratio, unknown_share=args.unknown_share)


def build_recharges(conn: psycopg.Connection, args: argparse.Namespace) -> Simulation:
    return Recharges(rate=args.rate, cards=reference.load_cards(conn, args.cards),
                     stations=reference.load_stations(conn), start_ts=datetime.now(UTC),
                     horizon=_horizon(args), rng=_rng(args))


def cmd_simulate(args: argparse.Namespace) -> int:
    dsn = database.conninfo()
    with database.connect(dsn, autocommit=True) as conn:
        try:
            simulation = args.build(conn, args)
        except ValueError as error:
            raise MetroError(str(error)) from None
    connections = args.connections or DEFAULT_CONNECTIONS[args.mode]
    sink = DirectSink(dsn, mode=args.mode, connections=connections,
                      max_in_flight=args.max_in_flight, report=report)
    print(describe(args, simulation, connections), flush=True)
    run = Run(simulation, sink, display_interval=args.display_interval,
              print_line=lambda text: print(text, flush=True))
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
    return 130 if result.interrupted else 0


def _options(args: argparse.Namespace) -> dict[str, Any]:
    hidden = {"func", "build", "command"}
    return {key: (str(value) if isinstance(value, Path) else value)
            for key, value in vars(args).items() if key not in hidden}


def describe(args: argparse.Namespace, simulation: Simulation, connections: int) -> str:
    until = "until Ctrl-C" if args.duration == 0 else f"for {args.duration:g} s"
    seed = f", seed {args.seed}" if args.seed is not None else ""
    return (f"{args.command}: {simulation.describe()} {until}, {args.mode} mode over "
            f"{connections} connections{seed}")


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return parse


def _share(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, got {text}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def _via(text: str) -> str:
    if text not in VIAS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not available; supported: {', '.join(VIAS)} (call the functions)")
    return text


def _add_run_options(parser: argparse.ArgumentParser, duration: float = 60) -> None:
    parser.add_argument("--duration", type=_non_negative, default=duration, metavar="S",
                        help="seconds to run; 0 runs until Ctrl-C (default %(default)s)")
    parser.add_argument("--display-interval", type=_positive(float), default=5.0, metavar="S",
                        help="seconds between live statistics lines (default %(default)s)")
    parser.add_argument("--stats-file", metavar="PATH", help="write the final summary as JSON")
    parser.add_argument("--via", type=_via, default="direct",
                        help="how events reach the system: direct calls the functions")
    parser.add_argument("--mode", choices=MODES, default="pipeline",
                        help="pipeline: libpq pipeline mode; async: one call at a time per "
                             "connection (default %(default)s)")
    parser.add_argument("--connections", type=_positive(int), metavar="N",
                        help="database connections (default 4 in pipeline mode, 16 in async "
                             "mode)")
    parser.add_argument("--max-in-flight", type=_positive(int), default=10_000, metavar="N",
                        help="calls sent and not yet answered, at most (default %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="producers", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    generate = sub.add_parser("cards", help="write a cards CSV with the documented mix")
    generate.add_argument("--count", type=_positive(int), required=True, metavar="N")
    generate.add_argument("--output", default="-", metavar="PATH",
                          help="CSV file to write (default: standard output)")
    generate.add_argument("--seed", type=int, help="same seed, same cards")
    generate.add_argument("--first-id", type=int, default=1, metavar="ID",
                          help="card_id of the first card (default %(default)s)")
    generate.add_argument("--as-of", type=date.fromisoformat, default=datetime.now(UTC).date(),
                          metavar="YYYY-MM-DD",
                          help="reference date for expiry dates (default: today, UTC)")
    generate.set_defaults(func=cmd_cards)

    trains = sub.add_parser("trains", help="move trains along the line (record_train_event)")
    trains.add_argument("--trains", type=_positive(int), default=8, metavar="N",
                        help="trains 1..N (default %(default)s)")
    trains.add_argument("--speedup", type=_positive(float), default=1.0, metavar="X",
                        help="simulated seconds per second (default %(default)s)")
    trains.add_argument("--line", type=Path, default=line.LINE_CSV, metavar="CSV",
                        help="line timing (default data/line.csv)")
    _add_run_options(trains)
    trains.set_defaults(func=cmd_simulate, build=build_trains, seed=None)

    riders = sub.add_parser("riders", help="entries and exits at the turnstiles")
    riders.add_argument("--rate", type=_positive(float), default=1000.0, metavar="R",
                        help="entry swipes per second (default %(default)s)")
    riders.add_argument("--cards", type=_positive(int), metavar="N",
                        help="use the first N cards by card_id (default: all)")
    riders.add_argument("--fraud-ratio", type=_share, default=0.01, metavar="F",
                        help="share of entries made by cloned cards (default %(default)s)")
    riders.add_argument("--unknown-share", type=_share, default=UNKNOWN_SHARE, metavar="U",
                        help="share of the other entries made with unknown cards "
                             "(default %(default)s)")
    riders.add_argument("--speedup", type=_positive(float), default=1.0, metavar="X",
                        help="simulated seconds per second: rides end sooner "
                             "(default %(default)s)")
    riders.add_argument("--seed", type=int, help="seed of the random choices")
    riders.add_argument("--line", type=Path, default=line.LINE_CSV, metavar="CSV",
                        help="line timing, for ride times (default data/line.csv)")
    _add_run_options(riders)
    riders.set_defaults(func=cmd_simulate, build=build_riders)

    recharges = sub.add_parser("recharges", help="recharges at ticket machines")
    recharges.add_argument("--rate", type=_positive(float), default=10.0, metavar="R",
                           help="recharges per second (default %(default)s)")
    recharges.add_argument("--cards", type=_positive(int), metavar="N",
                           help="use the first N cards by card_id (default: all)")
    recharges.add_argument("--seed", type=int, help="seed of the random choices")
    _add_run_options(recharges)
    recharges.set_defaults(func=cmd_simulate, build=build_recharges)
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

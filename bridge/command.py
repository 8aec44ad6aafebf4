"""`metro bridge`: options, the status view, and a clean stop on Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import logging
import re
import signal
import threading
from collections.abc import Callable
from datetime import timedelta

from metro import config, database

from .runner import Bridge, BridgeOptions
from .status import collect, render

DEFAULTS = BridgeOptions(dsn="", kafka="")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> timedelta:
    """90s, 15m, 24h, 7d, or plain seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (examples: 90s, 15m, 24h, 7d)")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2) or "s"])


def _positive(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive: {text}")
        return value
    return parse


def add_parser(sub: argparse._SubParsersAction) -> None:
    bridge = sub.add_parser(
        "bridge", help="forward the streams to Kafka and the inbound topics to the functions")
    bridge.add_argument("--kafka", metavar="HOST:PORT",
                        help="bootstrap servers (default METRO_KAFKA, else the broker of "
                             "`metro kafka start`)")
    bridge.add_argument("--status", action="store_true",
                        help="print lease, lag per stream, last error and inbound offsets; exit")
    bridge.add_argument("--batch-size", type=_positive(int), default=DEFAULTS.batch_size,
                        help="rows per stream per Kafka round (default %(default)s)")
    bridge.add_argument("--poll-interval", type=_positive(float),
                        default=DEFAULTS.poll_interval,
                        help="seconds between polls when no NOTIFY arrives (default %(default)g)")
    bridge.add_argument("--retention", type=duration, default=DEFAULTS.retention,
                        help="delete stream rows this long after Kafka acknowledged them "
                             "(default 24h)")
    bridge.add_argument("--prune-interval", type=_positive(float),
                        default=DEFAULTS.prune_interval,
                        help="seconds between pruning passes (default %(default)g)")
    bridge.add_argument("--no-inbound", action="store_true",
                        help="do not consume TRAINTOPIC, RECHARGE and transaction_topic")
    bridge.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    if args.status:
        with database.connect() as conn:
            print(render(collect(conn)))
        return 0

    bootstrap = config.kafka_servers(args.kafka)
    options = BridgeOptions(dsn=database.conninfo(), kafka=bootstrap, batch_size=args.batch_size,
                            poll_interval=args.poll_interval, retention=args.retention,
                            prune_interval=args.prune_interval, inbound=not args.no_inbound)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    # The bridge reports Kafka trouble itself, once per failure, in one line.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    Bridge(options, stop).run()
    return 0

"""`metro bridge`: options, the status view, and a clean stop on Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import logging

from metro import config, database, schema
from metro.service_cli import duration, positive, run_until_stopped

from .runner import Bridge, BridgeOptions
from .status import collect, render

DEFAULTS = BridgeOptions(dsn="", kafka="")


def add_parser(sub: argparse._SubParsersAction) -> None:
    bridge = sub.add_parser(
        "bridge", help="forward the streams to Kafka and the inbound topics to the functions")
    bridge.add_argument("--kafka", metavar="HOST:PORT",
                        help="bootstrap servers (default METRO_KAFKA, else the broker of "
                             "`metro kafka start`)")
    bridge.add_argument("--status", action="store_true",
                        help="print lease, lag per stream, last error and inbound offsets; exit")
    bridge.add_argument("--batch-size", type=positive(int), default=DEFAULTS.batch_size,
                        help="rows per stream per Kafka round (default %(default)s)")
    bridge.add_argument("--poll-interval", type=positive(float),
                        default=DEFAULTS.poll_interval,
                        help="seconds between polls when no NOTIFY arrives (default %(default)g)")
    bridge.add_argument("--retention", type=duration, default=DEFAULTS.retention,
                        help="delete stream rows this long after Kafka acknowledged them "
                             "(default 24h)")
    bridge.add_argument("--prune-interval", type=positive(float),
                        default=DEFAULTS.prune_interval,
                        help="seconds between pruning passes (default %(default)g)")
    bridge.add_argument("--no-inbound", action="store_true",
                        help="do not consume TRAINTOPIC, RECHARGE and transaction_topic")
    bridge.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    if args.status:
        with database.connect() as conn:
            schema.require_installed(conn, "bridge_state", "0002")
            print(render(collect(conn)))
        return 0

    bootstrap = config.kafka_servers(args.kafka)
    options = BridgeOptions(dsn=database.conninfo(), kafka=bootstrap, batch_size=args.batch_size,
                            poll_interval=args.poll_interval, retention=args.retention,
                            prune_interval=args.prune_interval, inbound=not args.no_inbound)
    # The bridge reports Kafka trouble itself, once per failure, in one line.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    run_until_stopped(lambda stop: Bridge(options, stop).run())
    return 0

"""`metro dashboard`: options; the server itself (server.py) is imported only when run."""

from __future__ import annotations

import argparse

from metro import config
from metro.service_cli import tcp_port


def add_parser(sub: argparse._SubParsersAction) -> None:
    dashboard = sub.add_parser("dashboard", help="serve the live dashboard page and Prometheus "
                                                 "metrics (/metrics)")
    dashboard.add_argument("--host", default="127.0.0.1",
                           help="address to listen on (default %(default)s)")
    dashboard.add_argument("--port", type=tcp_port(), default=8080,
                           help="port to listen on (default %(default)s)")
    dashboard.add_argument("--kafka", metavar="HOST:PORT",
                           help="Kafka bootstrap servers for metro_kafka_up and the inbound "
                                "lag (default METRO_KAFKA; none: no Kafka metrics)")
    dashboard.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    # The web stack is imported only when the dashboard runs: other commands start faster.
    from metro import kafka_clients

    from . import server

    kafka_clients.quiet_kafka_logging()
    return server.serve(args.host, args.port, config.kafka_bootstrap(args.kafka))

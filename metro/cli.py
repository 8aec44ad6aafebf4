"""The `metro` command: database control, schema install, psql, demo, Kafka broker, bridge."""

from __future__ import annotations

import argparse
import os
import sys

import psycopg

from bridge import command as bridge_command
from metro import database, kafka, schema
from metro.app import topics as topics_command
from metro.app.web import command as dashboard_command
from metro.embedded import bin_dir
from metro.errors import MetroError


def cmd_db(args: argparse.Namespace) -> int:
    if not database.uses_embedded():
        if args.action == "url":
            print(database.conninfo() or "(libpq defaults from the PG* variables)")
            return 0
        print(f"metro uses an external PostgreSQL ({_describe_external()}); "
              "db start/stop/status apply only to the embedded server")
        return 0 if args.action == "status" else 2
    server = database.embedded_server()
    if args.action == "start":
        server.start()
        print(f"embedded PostgreSQL running: {server.url()}")
    elif args.action == "stop":
        stopped = server.stop()
        print("embedded PostgreSQL stopped" if stopped else "embedded PostgreSQL was not running")
    elif args.action == "status":
        if server.running():
            print(f"running: {server.url()} (data {server.pgdata})")
        else:
            print(f"stopped (data {server.pgdata})")
            return 3
    elif args.action == "url":
        print(server.url())
    return 0


def _describe_external() -> str:
    return "METRO_DATABASE_URL" if os.environ.get("METRO_DATABASE_URL") else "PG* variables"


def cmd_install(args: argparse.Namespace) -> int:
    dsn = database.conninfo()
    revision = schema.install(dsn)
    print(f"metro schema installed at revision {revision}; search_path set to {schema.SEARCH_PATH}")
    return 0


def cmd_psql(args: argparse.Namespace) -> int:
    dsn = database.conninfo()
    psql = str(bin_dir() / "psql")
    sys.stdout.flush()
    os.execv(psql, [psql, "-d", dsn, *args.psql_args])
    return 0  # not reached


def cmd_demo(args: argparse.Namespace) -> int:
    from metro import demo

    return demo.run(demo.DemoOptions(seconds=args.seconds, rate=args.rate, cards=args.cards,
                                     kafka=args.kafka))


def cmd_bench(args: argparse.Namespace) -> int:
    from bench.__main__ import main as run_benchmarks

    return run_benchmarks([*(["--quick"] if args.quick else []), "--only", args.only])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metro", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="control the embedded PostgreSQL")
    db.add_argument("action", choices=["start", "stop", "status", "url"])
    db.set_defaults(func=cmd_db)

    install = sub.add_parser("install", help="create or upgrade the metro schema (idempotent)")
    install.set_defaults(func=cmd_install)

    psql = sub.add_parser("psql", help="run psql against the selected database")
    psql.add_argument("psql_args", nargs=argparse.REMAINDER, help="passed to psql")
    psql.set_defaults(func=cmd_psql)

    demo = sub.add_parser("demo", help="run the whole system for a minute with a live view: "
                                       "simulated riders, trains and recharges, bridge, Kafka")
    demo.add_argument("--seconds", type=float, default=60.0, metavar="S",
                      help="how long the simulators run (default %(default)g)")
    demo.add_argument("--rate", type=float, default=300.0, metavar="R",
                      help="entry swipes per second (default %(default)g)")
    demo.add_argument("--cards", type=int, default=100_000, metavar="N",
                      help="cards to ride with; missing ones are generated and loaded "
                           "(default %(default)d)")
    demo.add_argument("--kafka", metavar="HOST:PORT",
                      help="Kafka bootstrap servers (default METRO_KAFKA, else the project's "
                           "broker when Java is there, else a JSON-lines file)")
    demo.set_defaults(func=cmd_demo)

    bench = sub.add_parser("bench", help="run every benchmark: one markdown table and "
                                         "bench/results/suite.json (python -m bench)")
    bench.add_argument("--quick", action="store_true", help="short runs, for a first look")
    bench.add_argument("--only", default="", help="comma-separated benchmark names")
    bench.set_defaults(func=cmd_bench)

    kafka.add_parser(sub)
    bridge_command.add_parser(sub)
    dashboard_command.add_parser(sub)
    topics_command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # psql takes its own options (-c, -f, -q ...), which argparse would reject.
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "psql":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "psql":
        args.psql_args = [*extra, *args.psql_args]
    try:
        return int(args.func(args))
    except MetroError as error:
        print(f"metro: {error}", file=sys.stderr)
        return 2
    except psycopg.Error as error:
        print(f"metro: {error.diag.message_primary or str(error).strip()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

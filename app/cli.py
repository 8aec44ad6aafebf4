"""The `metro` command: database control, schema install, psql and the sandbox, demo,
dashboard, Kafka broker and topics, bridge, worker, benchmarks."""

from __future__ import annotations

import argparse
import os
import sys

import psycopg
from psycopg import sql

from metro import config, database, schema
from metro.embedded import bin_dir
from metro.errors import MetroError

from ..bridge import command as bridge_command
from ..worker import command as worker_command
from . import demo, kafka_broker
from . import topics as topics_command
from .web import command as dashboard_command

SANDBOX = "metro_sandbox"
# Commands whose arguments are psql's.
PSQL_COMMANDS = ("psql", "sandbox")


def cmd_db(args: argparse.Namespace) -> int:
    if not database.uses_embedded():
        if args.action == "url":
            print(database.conninfo() or "(libpq defaults from the PG* variables)")
            return 0
        print(f"metro uses an external PostgreSQL ({config.external_database_source()}); "
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


def cmd_install(args: argparse.Namespace) -> int:
    dsn = database.conninfo()
    revision = schema.install(dsn)
    print(f"metro schema installed at revision {revision}; search_path set to {schema.SEARCH_PATH}")
    return 0


def cmd_psql(args: argparse.Namespace) -> int:
    _exec_psql(database.conninfo(), args.psql_args)
    return 0  # not reached


def cmd_sandbox(args: argparse.Namespace) -> int:
    dsn = database.conninfo()
    with database.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(SANDBOX)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(SANDBOX)))
    sandbox = database.with_dbname(dsn, SANDBOX)
    revision = schema.install(sandbox)
    print(f"fresh database {SANDBOX} with the metro schema at revision {revision}", flush=True)
    _exec_psql(sandbox, args.psql_args)
    return 0  # not reached


def _exec_psql(dsn: str, psql_args: list[str]) -> None:
    psql = str(bin_dir() / "psql")
    sys.stdout.flush()
    os.execv(psql, [psql, "-d", dsn, *psql_args])


def cmd_bench(args: argparse.Namespace) -> int:
    # The benchmarks are their own program (python -m metro.bench), above the applications.
    # It replaces this process, so that a SIGTERM reaches the runner, which stops the
    # benchmark cleanly (its scratch database dropped).
    command = [sys.executable, "-m", "metro.bench", "--prog", "metro bench",
               *(["--quick"] if args.quick else []), *(["--smoke"] if args.smoke else []),
               *(["--only", args.only] if args.only else [])]
    sys.stdout.flush()
    os.execv(sys.executable, command)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metro", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="control the embedded PostgreSQL")
    db.add_argument("action", choices=["start", "stop", "status", "url"],
                    help="start: initialize on first use and start; stop; status: running or "
                         "not (exit 3 when stopped); url: the connection URL")
    db.set_defaults(func=cmd_db)

    install = sub.add_parser("install", help="create or upgrade the metro schema (idempotent)")
    install.set_defaults(func=cmd_install)

    # Every argument, --help included, is psql's own.
    psql = sub.add_parser("psql", add_help=False, help="run psql against the selected database "
                                                       "(metro psql --help: psql's options)")
    psql.add_argument("psql_args", nargs=argparse.REMAINDER, help="passed to psql")
    psql.set_defaults(func=cmd_psql)

    sandbox = sub.add_parser("sandbox", add_help=False,
                             help=f"psql on a fresh database {SANDBOX} with the schema "
                                  "installed, made anew each time (the README's walkthrough)")
    sandbox.add_argument("psql_args", nargs=argparse.REMAINDER, help="passed to psql")
    sandbox.set_defaults(func=cmd_sandbox)

    demo.add_parser(sub)  # its options live with the demo

    bench = sub.add_parser("bench", help="run every benchmark: one markdown table and "
                                         "bench/results/suite.json (python -m metro.bench)")
    bench.add_argument("--quick", action="store_true", help="short runs, for a first look")
    bench.add_argument("--smoke", action="store_true",
                       help="every benchmark at a tiny size: proves they work, gives no figures")
    bench.add_argument("--only", default="", metavar="NAMES",
                       help="comma-separated benchmark names (metro bench --only x lists them)")
    bench.set_defaults(func=cmd_bench)

    kafka_broker.add_parser(sub)
    bridge_command.add_parser(sub)
    worker_command.add_parser(sub)
    dashboard_command.add_parser(sub)
    topics_command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # psql takes its own options (-c, -f, -q ...), which argparse would reject.
    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in PSQL_COMMANDS:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command in PSQL_COMMANDS:
        args.psql_args = [*extra, *args.psql_args]
    try:
        return int(args.func(args))
    except MetroError as error:
        print(f"metro: {error}", file=sys.stderr)
        return 2
    except psycopg.Error as error:
        message = (error.diag.message_primary or str(error).strip()).rstrip(".")
        hint = error.diag.message_hint
        print(f"metro: {message}" + (f". {hint}" if hint else ""), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

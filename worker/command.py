"""`metro worker`: options, --once, --status, and a clean stop on Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
from datetime import timedelta

from metro import database, schema
from metro.service_cli import positive, run_until_stopped

from .runner import Worker, WorkerOptions, run_once
from .status import collect, render

DEFAULTS = WorkerOptions(dsn="")


def add_parser(sub: argparse._SubParsersAction) -> None:
    worker = sub.add_parser(
        "worker", help="keep derived data current (run_rollup) and old data out "
                       "(run_maintenance)")
    worker.add_argument("--status", action="store_true",
                        help="print the lease holder, the lag per source and the last "
                             "maintenance; exit")
    worker.add_argument("--once", action="store_true",
                        help="roll up everything committed, run maintenance until nothing more "
                             "is due, exit")
    worker.add_argument("--batch-size", type=positive(int), default=DEFAULTS.batch_size,
                        help="rows of each source per rollup transaction (default %(default)s)")
    worker.add_argument("--busy-interval", type=positive(float),
                        default=DEFAULTS.busy_interval,
                        help="seconds between rollups while rows arrive (default %(default)g)")
    worker.add_argument("--idle-interval", type=positive(float),
                        default=DEFAULTS.idle_interval,
                        help="seconds between rollups when idle (default %(default)g)")
    worker.add_argument("--maintenance-interval", type=positive(float),
                        default=DEFAULTS.maintenance_interval,
                        help="seconds between run_maintenance() calls (default %(default)g)")
    # The bounds worker_take_lease() accepts.
    worker.add_argument("--lease", type=positive(float, least=1, most=3600),
                        default=DEFAULTS.lease.total_seconds(),
                        help="seconds a lease lasts without renewal, 1 to 3600: how soon a "
                             "waiting worker takes over from one that died (default %(default)g)")
    worker.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    if args.status:
        with database.connect() as conn:
            schema.require_installed(conn, "worker_state", "0008")
            print(render(collect(conn)))
        return 0
    dsn = database.conninfo()
    if args.once:
        done = run_once(dsn, args.batch_size)
        rolled = ", ".join(f"{source} {n:,}" for source, n in sorted(done.rolled_up.items()))
        print(f"rolled up: {rolled}")
        for action, table, partition, rows in done.maintenance or []:
            print(f"{action} {partition or table}" + (f" ({rows:,} rows)" if rows else ""))
        return 0
    lease = timedelta(seconds=args.lease)
    options = WorkerOptions(dsn=dsn, batch_size=args.batch_size,
                            busy_interval=args.busy_interval, idle_interval=args.idle_interval,
                            maintenance_interval=args.maintenance_interval, lease=lease,
                            heartbeat=max(0.2, args.lease / 5))
    run_until_stopped(lambda stop: Worker(options, stop).run())
    return 0

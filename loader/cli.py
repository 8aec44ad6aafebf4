"""The `loader` command: load CSV files into metro tables with COPY, reporting every bad row.

Exit status: 0 every row loaded, 1 some rows invalid (and reported),
2 fatal error (file missing, unknown table, database unreachable...).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg

from metro import database
from metro.errors import MetroError

from .calling import CallLoader
from .catalog import find_function, find_table
from .copying import CopyLoader
from .errors import LoadError, fatal
from .progress import Progress
from .report import MaxErrorsReached, Report
from .source import CsvSource

EXIT_OK, EXIT_INVALID, EXIT_FATAL = 0, 1, 2


def _one_byte(name: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if len(value.encode()) != 1 or value in "\r\n":
            raise argparse.ArgumentTypeError(f"{name} must be a single one-byte character")
        return value
    return check


def _count(minimum: int) -> Callable[[str], int]:
    def check(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
        if number < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}")
        return number
    return check


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loader", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE.csv",
                        help="CSV files; each loads into the table named by its stem")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--table", metavar="NAME",
                        help="load into this table instead (schema metro unless qualified)")
    target.add_argument("--procedure", "-p", metavar="NAME",
                        help="call this function once per row, the row's fields as arguments")
    parser.add_argument("--reportdir", type=Path, default=Path("log"), metavar="DIR",
                        help="where the report files go (default: ./log)")
    parser.add_argument("--header", action="store_true", help="the first line is a header")
    parser.add_argument("--skip", type=_count(0), default=0, metavar="N",
                        help="skip N lines first (before the header, if any)")
    parser.add_argument("--delimiter", type=_one_byte("--delimiter"), default=",")
    parser.add_argument("--quotechar", type=_one_byte("--quotechar"), default='"')
    parser.add_argument("--null", metavar="STRING",
                        help="unquoted text that means NULL (default: an unquoted empty field)")
    parser.add_argument("--max-errors", type=_count(-1), default=100, metavar="N",
                        help="stop after N invalid rows (default 100; -1: no limit)")
    parser.add_argument("--batch", type=_count(1), default=50_000, metavar="N",
                        help="rows per COPY and per transaction (default 50000)")
    parser.add_argument("--truncate", action="store_true",
                        help="empty the table first, in the same transaction as the whole load")
    parser.add_argument("--upsert", action="store_true",
                        help="replace rows that have the same primary key")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.procedure and (args.truncate or args.upsert):
            raise LoadError("--truncate and --upsert apply to tables, not to --procedure")
        for path in args.files:
            if not path.is_file():
                raise LoadError(f"no such file: {path}")
        with database.connect(database.conninfo(), autocommit=True) as conn:
            status = EXIT_OK
            for path in args.files:
                status = max(status, load_file(conn, path, args))
            return status
    except MetroError as error:
        print(f"loader: {error}", file=sys.stderr)
    except psycopg.OperationalError as error:
        print(f"loader: lost the connection to PostgreSQL: {str(error).strip()}", file=sys.stderr)
    except OSError as error:
        print(f"loader: {error.strerror or error}: {error.filename}", file=sys.stderr)
    except KeyboardInterrupt:
        print("loader: interrupted; the transaction in progress was rolled back", file=sys.stderr)
    return EXIT_FATAL


def load_file(conn: psycopg.Connection, path: Path, args: argparse.Namespace) -> int:
    """Loads one file and prints its summary; the exit status it deserves."""
    skip = args.skip + (1 if args.header else 0)
    with CsvSource(path, args.quotechar.encode(), skip, args.batch) as source:
        report = Report(args.reportdir, path, source.skipped_lines, args.max_errors)
        progress = Progress(path.name, path.stat().st_size)
        options = {"delimiter": args.delimiter, "quote": args.quotechar, "null": args.null}
        stopped_at = None
        try:
            if args.procedure:
                caller = CallLoader(conn, find_function(conn, args.procedure), report, **options)
                for batch in source.batches():
                    caller.load(batch)
                    progress.update(source.bytes_read, report.counts.read)
            else:
                _load_table(conn, source, report, progress, args, options)
        except MaxErrorsReached:
            stopped_at = report.last_line
        except MetroError as error:
            report.close([f"{path.name}: {error}"])
            raise
        finally:
            progress.finish()
    lines = _closing_lines(path, report, source, stopped_at, args)
    report.close(lines)
    print("\n".join(lines))
    return EXIT_INVALID if report.counts.invalid else EXIT_OK


def _load_table(conn: psycopg.Connection, source: CsvSource, report: Report, progress: Progress,
                args: argparse.Namespace, options: dict[str, Any]) -> None:
    name = args.table or source.path.stem
    table = find_table(conn, name)
    copier = CopyLoader(conn, table, report, batch_size=args.batch, upsert=args.upsert, **options)
    if args.truncate:
        # One transaction: TRUNCATE and every batch commit together or not at all.
        try:
            with conn.transaction():
                conn.execute(table.emptying())
                for batch in source.batches():
                    copier.load(batch)
                    progress.update(source.bytes_read, report.counts.read)
        except MaxErrorsReached:
            reason = (f"stopped at line {report.last_line} after {report.counts.invalid} "
                      f"invalid rows (--max-errors {args.max_errors})")
        except psycopg.Error as error:
            reason = str(fatal(error, table.qualified))
        except LoadError as error:
            reason = str(error)
        else:
            return
        raise LoadError(f"{reason}; rolled back: {table.qualified} keeps its previous contents")
    for batch in source.batches():
        stopped = False
        try:
            with conn.transaction():
                try:
                    copier.load(batch)
                except MaxErrorsReached:
                    stopped = True  # commit what this batch loaded before the limit
        except psycopg.Error as error:
            raise fatal(error, table.qualified) from None
        progress.update(source.bytes_read, report.counts.read)
        if stopped:
            raise MaxErrorsReached


def _closing_lines(path: Path, report: Report, source: CsvSource, stopped_at: int | None,
                   args: argparse.Namespace) -> list[str]:
    counts = report.counts
    lines = [f"{path.name}: {counts.summary()}"]
    if stopped_at is not None:
        lines.append(f"{path.name}: stopped at line {stopped_at} after {counts.invalid} "
                     f"invalid rows (--max-errors {args.max_errors}); later lines were not read")
    if source.blank_lines:
        lines.append(f"{path.name}: {source.blank_lines} blank lines skipped")
    if counts.invalid:
        lines.append(f"{path.name}: invalid rows in {report.invalid_path}, "
                     f"reasons in {report.log_path}")
        first = report.first_invalid
        if first and first[0] == 1 and first[1].startswith("invalid input syntax"):
            lines.append(f"{path.name}: line 1 looks like a header: skip it with --header")
    return lines

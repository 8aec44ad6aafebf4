"""The `loader` command: load CSV files into metro tables with COPY, reporting every bad row.

Each file loads into the metro table its stem names (stations.csv -> metro.stations),
or into --table, or is given row by row to a metro function (--procedure). Bad rows
are set aside: per file, the report directory gets <stem>.invalid.csv (the invalid
rows exactly as read), <stem>.log (line number and reason of each) and <stem>.summary.

Exit status: 0 every row loaded, 1 some rows invalid (and reported),
2 fatal error (file missing, unknown table, database unreachable...), one line.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg

from metro import database
from metro.errors import MetroError
from metro.service_cli import at_least

from .calling import CallLoader
from .catalog import APPEND_ONLY, FUNCTIONS, TABLES, Function, Table, find_function, find_table
from .copying import CopyLoader
from .errors import LoadError, fatal, use_error_codes
from .progress import Progress
from .report import MaxErrorsReached, Report
from .source import CsvSource, looks_like_data

EXIT_OK, EXIT_INVALID, EXIT_FATAL = 0, 1, 2


# Files that start like these are not CSV text the loader reads: what they are, and
# what to do (a compressed file's stem also names no table: stations.csv.gz).
UNREADABLE_STARTS = (
    (b"\x1f\x8b", "gzip-compressed", "decompress it first (gunzip -k)"),
    (b"BZh", "bzip2-compressed", "decompress it first (bunzip2 -k)"),
    (b"\xfd7zXZ\x00", "xz-compressed", "decompress it first (unxz -k)"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed", "decompress it first (unzstd)"),
    (b"PK\x03\x04", "a zip archive", "extract it first (unzip)"),
    (b"\xff\xfe", "UTF-16 text", "convert it first (iconv -f UTF-16 -t UTF-8)"),
    (b"\xfe\xff", "UTF-16 text", "convert it first (iconv -f UTF-16 -t UTF-8)"),
)
# A bzip2 stream goes on with its block size and a block's magic (BZh9 1AY&SY):
# a text file may start with "BZh" too.
_BZIP2 = re.compile(rb"BZh[1-9]1AY&SY")


def _one_byte(name: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        # '\t' as typed in a shell without $'...': a tab, as csvloader reads it.
        value = "\t" if value == "\\t" else value
        if len(value.encode()) != 1 or value in "\r\n":
            raise argparse.ArgumentTypeError(f"{name} must be a single one-byte character")
        return value
    return check


def _prog() -> str:
    """The program's name as the user typed it: `loader` (or the script's name),
    `python -m loader` (whatever the package is called)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:
        return f"python -m {spec.name.removesuffix('.__main__')}"
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return "loader" if name in ("", "-c") else name


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_prog(), description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE.csv",
                        help="CSV files (UTF-8); each loads into the metro table named by its "
                             "stem, or as --table / --procedure say")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--table", metavar="NAME",
                        help="load every file into this metro table instead; one of: "
                             + ", ".join(TABLES))
    target.add_argument("--procedure", "-p", metavar="NAME",
                        help="call this metro function once per row, the row's fields as its "
                             "arguments; one of: " + ", ".join(FUNCTIONS))
    parser.add_argument("--reportdir", type=Path, default=Path("log"), metavar="DIR",
                        help="where the report files go (default: ./log)")
    parser.add_argument("--header", action="store_true",
                        help="the first line (after --skip) is a header: neither loaded nor "
                             "reported")
    parser.add_argument("--skip", type=at_least(0), default=0, metavar="N",
                        help="skip N lines first (before the header, if any; default 0)")
    parser.add_argument("--delimiter", type=_one_byte("--delimiter"), default=",", metavar="C",
                        help="the character between fields, one byte (default: ,); \\t is a"
                             " tab")
    parser.add_argument("--quotechar", type=_one_byte("--quotechar"), default='"', metavar="C",
                        help="the character around a field that holds the delimiter, a line "
                             "break or itself (doubled inside); one byte (default: \")")
    parser.add_argument("--null", metavar="STRING",
                        help="unquoted text that means NULL (default: an unquoted empty field)")
    parser.add_argument("--max-errors", type=at_least(-1), default=100, metavar="N",
                        help="stop after N invalid rows, keeping what loaded before "
                             "(default 100; -1: no limit)")
    parser.add_argument("--batch", type=at_least(1), default=50_000, metavar="N",
                        help="rows per COPY and per transaction (default 50000)")
    parser.add_argument("--truncate", action="store_true",
                        help="empty the table first, in the same transaction as the whole load: "
                             "if the load stops, the table keeps its old contents")
    parser.add_argument("--upsert", action="store_true",
                        help="replace rows that have the same primary key (the last one in the "
                             "file wins); neither is for card_events")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.procedure and (args.truncate or args.upsert):
            raise LoadError("--truncate and --upsert apply to tables, not to --procedure")
        _check_format(args)
        _check_files(args.files)
        with _connect() as conn:
            # Every target is checked before anything is loaded or written.
            targets = [_target(conn, path, args) for path in args.files]
            if args.truncate and any(isinstance(t, Table) and t.name == APPEND_ONLY
                                     for t in targets):
                raise LoadError(f"--truncate would empty {APPEND_ONLY}, the record of every "
                                f"swipe, which is append-only; to start it afresh, TRUNCATE "
                                f"metro.{APPEND_ONLY} in SQL first")
            status = EXIT_OK
            for path, target in zip(args.files, targets, strict=True):
                status = max(status, load_file(conn, path, args, target))
            return status
    except MetroError as error:
        print(f"loader: {error}", file=sys.stderr)
    except psycopg.OperationalError as error:
        print(f"loader: lost the connection to PostgreSQL: {_one_line(error)}", file=sys.stderr)
    except psycopg.Error as error:
        print(f"loader: PostgreSQL refused: {_one_line(error)}", file=sys.stderr)
    except OSError as error:
        print(f"loader: {error.strerror or error}: {error.filename}", file=sys.stderr)
    except KeyboardInterrupt:
        print("loader: interrupted; the transaction in progress was rolled back", file=sys.stderr)
    return EXIT_FATAL


def _check_format(args: argparse.Namespace) -> None:
    """Refuses options COPY would refuse on every row (which would report good rows as
    invalid): the quote must differ from the delimiter, and neither may be in --null."""
    if args.quotechar == args.delimiter:
        raise LoadError(f"--quotechar and --delimiter must differ; both are {args.delimiter!r}")
    for name, char in (("--delimiter", args.delimiter), ("--quotechar", args.quotechar)):
        if args.null is not None and char in args.null:
            raise LoadError(f"--null {args.null!r} holds the {name} {char!r}: "
                            f"a field could not be told from a NULL")


def _check_files(paths: Sequence[Path]) -> None:
    """Every file exists and is a regular file, and no two write the same report files
    (named after the file, without its folder and extension)."""
    for path in paths:
        if path.is_dir():
            raise LoadError(f"{path} is a directory: name the files in it")
        if not path.is_file():
            raise LoadError(f"not a regular file: {path}" if path.exists()
                            else f"no such file: {path}")
        with path.open("rb") as file:
            start = file.read(10)
        for magic, what, fix in UNREADABLE_STARTS:
            if start.startswith(magic) and (magic != b"BZh" or _BZIP2.match(start)):
                raise LoadError(f"{path} is {what}, not UTF-8 CSV text: {fix}")
    seen: dict[str, Path] = {}
    for path in paths:
        if path.stem in seen and path.resolve() == seen[path.stem].resolve():
            raise LoadError(f"{path} is given twice: load it once")
        if path.stem in seen:
            raise LoadError(f"{seen[path.stem]} and {path} would write the same reports "
                            f"({path.stem}.invalid.csv, {path.stem}.log): load them in "
                            f"separate runs, each with its own --reportdir")
        seen[path.stem] = path


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def _connect() -> psycopg.Connection:
    """The selected database; any failure to reach it (a malformed METRO_DATABASE_URL
    too) is a LoadError. Timestamps without an offset are read as UTC, whatever the
    server's or the database's TimeZone."""
    try:
        conn = database.connect(database.conninfo(), autocommit=True)
    except psycopg.Error as error:
        raise LoadError(f"cannot connect to PostgreSQL: {_one_line(error)}") from None
    try:
        conn.execute("SET TimeZone = 'UTC'")
    except BaseException:
        conn.close()
        raise
    return conn


def _target(conn: psycopg.Connection, path: Path, args: argparse.Namespace) -> Table | Function:
    if args.procedure:
        return find_function(conn, args.procedure)
    if args.table:
        return find_table(conn, args.table, "--table")
    return find_table(conn, path.stem)


def load_file(conn: psycopg.Connection, path: Path, args: argparse.Namespace,
              target: Table | Function | None = None) -> int:
    """Loads one file and prints its summary; the exit status it deserves."""
    if target is None:
        target = _target(conn, path, args)
    use_error_codes(conn)
    skip = args.skip + (1 if args.header else 0)
    with CsvSource(path, args.quotechar.encode(), skip, args.batch) as source:
        report = Report(args.reportdir, path, args.max_errors)
        progress = Progress(path.name, path.stat().st_size)
        options = {"delimiter": args.delimiter, "quote": args.quotechar, "null": args.null}
        stopped_at = None
        try:
            if isinstance(target, Function):
                caller = CallLoader(conn, target, report, **options)
                for batch in source.batches():
                    caller.load(batch)
                    progress.update(source.bytes_read, report.counts.read)
            else:
                _load_table(conn, target, source, report, progress, args, options)
        except MaxErrorsReached:
            stopped_at = report.last_line
        except MetroError as error:
            report.close([f"{path.name}: {error}"])
            raise
        except BaseException as error:  # the report files are closed whatever stops the load
            report.close([f"{path.name}: " + ("interrupted" if isinstance(error, KeyboardInterrupt)
                                              else f"stopped: {_one_line(error)}")])
            raise
        finally:
            progress.finish()
    lines = _closing_lines(path, report, source, stopped_at, args, target)
    report.close(lines)
    print("\n".join(lines))
    return EXIT_INVALID if report.counts.invalid else EXIT_OK


def _load_table(conn: psycopg.Connection, table: Table, source: CsvSource, report: Report,
                progress: Progress, args: argparse.Namespace, options: dict[str, Any]) -> None:
    copier = CopyLoader(conn, table, report, batch_size=args.batch, upsert=args.upsert, **options)
    if args.truncate:
        # One transaction: TRUNCATE and every batch commit together or not at all.
        try:
            with conn.transaction():
                conn.execute(table.emptying())
                for batch in source.batches():
                    copier.load(batch)
                    progress.update(source.bytes_read, report.counts.read)
                if not report.counts.loaded:
                    # An export that failed (empty, or every row refused for a wrong
                    # delimiter) must not wipe the table it was meant to replace.
                    raise LoadError(
                        f"no row loaded ({_plural(report.counts.read, 'row', 'rows')} read), "
                        "so --truncate would leave the table empty (TRUNCATE it in SQL if you"
                        " mean it)")
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
                   args: argparse.Namespace, target: Table | Function) -> list[str]:
    counts = report.counts
    lines = [f"{path.name}: {counts.summary()}"]
    if stopped_at is not None:
        lines.append(f"{path.name}: stopped at line {stopped_at} after {counts.invalid} "
                     f"invalid rows (--max-errors {args.max_errors}); later lines were not read")
    header = source.skipped_lines[-1] if args.header and source.skipped_lines else None
    if header is not None and looks_like_data(header, args.delimiter, args.quotechar):
        shown = header.decode("utf-8", errors="replace").rstrip("\r\n")
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        lines.append(f"{path.name}: line {len(source.skipped_lines)}, skipped as the header,"
                     f" looks like data ({shown}): if the file has no header, load it again"
                     " without --header")
    if source.first_spanning is not None:
        start, end = source.first_spanning
        records = _plural(source.spanning_records, "record spans", "records span")
        lines.append(f"{path.name}: {records} several lines, the first lines {start} to {end}:"
                     f" a quoted field holding a line break, or a stray {args.quotechar} in an"
                     " unquoted field")
    if source.blank_lines:
        lines.append(f"{path.name}: "
                     f"{_plural(source.blank_lines, 'blank line', 'blank lines')} skipped")
    if counts.invalid:
        lines.append(f"{path.name}: invalid rows in {report.invalid_path}, "
                     f"reasons in {report.log_path}")
        first = report.first_invalid
        if first and first[1].startswith('invalid byte sequence for encoding "UTF8"'):
            lines.append(f"{path.name}: not all of it is UTF-8 text; if it was written in"
                         " another encoding, convert it first (iconv -f LATIN1 -t UTF-8)")
        # Line 1 refused for its text, without a number in it, and other rows loaded or
        # none to load (a wrong delimiter refuses every row; a data row holds an id).
        if (first and first[0] == 1 and first[1].startswith("invalid input syntax")
                and (counts.loaded or counts.read == 1)
                and not looks_like_data(first[2], args.delimiter, args.quotechar)):
            lines.append(f"{path.name}: line 1 looks like a header: skip it with --header")
        # Only duplicate keys, as when a file is loaded again: say how to replace them.
        if counts.duplicates == counts.invalid and isinstance(target, Table) and not args.upsert:
            rows = _plural(counts.duplicates, "row has a key", "rows have keys")
            lines.append(f"{path.name}: {rows} already in {target.qualified} (loaded before, or "
                         f"earlier in this file): to replace those rows, load with --upsert")
    return lines

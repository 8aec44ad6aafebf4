"""Loading batches into a table with COPY, narrowing a failed COPY down to its bad rows.

A batch is loaded in windows of consecutive rows, each attempt under a
savepoint. When an attempt fails and PostgreSQL names the line (type errors,
wrong column count, CHECK, NOT NULL, duplicate key, invalid UTF-8...), that
row is set aside with PostgreSQL's reason and the window is tried again
without it. When it names no line (foreign keys are checked at the end of
the statement), the window is split in halves until the bad row stands
alone. The window doubles after a clean attempt and shrinks so that it holds
about one bad row: every failed attempt costs the rows before its bad row,
so a file with scattered bad rows must not resend a large batch for each.

On PostgreSQL 17 and later, COPY's ON_ERROR ignore sets aside rows with a
value of the wrong type without failing the attempt, and LOG_VERBOSITY
verbose names each one (line and column) in a notice; the reason is then
PostgreSQL's own, from pg_input_error_info on the field. Older servers take
the path above for those rows too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from .catalog import Table
from .errors import LoadError, copy_line, describe, fatal, is_row_error
from .report import Report
from .source import Batch, split_fields

# Windows never shrink below this many rows (bisection goes further).
MIN_WINDOW = 64
_TEMP = sql.Identifier("loader_upsert")
INTRANS = TransactionStatus.INTRANS
# COPY ... (ON_ERROR ignore, LOG_VERBOSITY verbose) exists from this version on.
ON_ERROR_FROM = 170000
# Why a row is invalid: the message for the report, and its SQLSTATE when it has one.
Reason = tuple[str, str | None]
_SKIPPED = re.compile(r'^skipping row due to data type incompatibility at line (\d+) '
                      r'for column "(.+?)": ')


def copy_statement(target: sql.Composable, columns: tuple[str, ...], delimiter: str,
                   quote: str, null: str | None) -> sql.Composed:
    options = [sql.SQL("FORMAT csv"), sql.SQL("ENCODING 'UTF8'"),
               sql.SQL("DELIMITER {}").format(sql.Literal(delimiter)),
               sql.SQL("QUOTE {}").format(sql.Literal(quote))]
    if null is not None:
        options.append(sql.SQL("NULL {}").format(sql.Literal(null)))
    return sql.SQL("COPY {} ({}) FROM STDIN ({})").format(
        target, sql.SQL(", ").join(map(sql.Identifier, columns)), sql.SQL(", ").join(options))


class CopyLoader:
    """Loads the batches of one file into table; bad rows go to report."""

    def __init__(self, conn: psycopg.Connection, table: Table, report: Report, *,
                 delimiter: str, quote: str, null: str | None, batch_size: int,
                 upsert: bool) -> None:
        self.conn = conn
        self.table = table
        self.report = report
        self.batch_size = batch_size
        self.window = batch_size
        # Savepoint state: None (none open), "clean" (open, nothing since) or
        # "used" (an attempt succeeded after it; released lazily, in one round
        # trip with the next SAVEPOINT).
        self.savepoint: str | None = None
        self.delimiter, self.quote = delimiter, quote
        self.attempt: Callable[[bytes, bool], None]
        self.skip_sql: bytes | None = None  # the COPY that sets type errors aside
        if upsert:
            self._prepare_upsert()
            statement = copy_statement(_TEMP, table.columns, delimiter, quote, null)
            self.attempt = self._upsert
        else:
            statement = copy_statement(table.identifier, table.columns, delimiter, quote, null)
            self.attempt = self._copy
            if conn.info.server_version >= ON_ERROR_FROM:
                self.skip_sql = statement.as_bytes(conn).replace(
                    b"(FORMAT csv", b"(ON_ERROR ignore, LOG_VERBOSITY verbose, FORMAT csv", 1)
        self.copy_sql = statement.as_bytes(conn)
        self.notices: list[tuple[int, str]] = []  # (line, column) set aside by the last COPY

    def load(self, batch: Batch) -> None:
        """Loads one batch inside the caller's transaction."""
        if self.skip_sql:
            self.conn.add_notice_handler(self._notice)
        try:
            lo = 0
            while lo < len(batch):
                rows = range(lo, min(len(batch), lo + self.window))
                found, lo = self._settle(batch, rows, {}, shrink=True)
                if found:
                    self.window = max(MIN_WINDOW, len(rows) // found)
                else:
                    self.window = min(self.batch_size, 2 * self.window)
        finally:
            if self.savepoint is not None and self.conn.info.transaction_status == INTRANS:
                self.conn.execute("RELEASE SAVEPOINT loader_attempt")
            self.savepoint = None
            if self.skip_sql:
                self.conn.remove_notice_handler(self._notice)

    def _settle(self, batch: Batch, rows: Sequence[int], bad: dict[int, Reason],
                shrink: bool = False) -> tuple[int, int]:
        """Loads rows (indexes into batch, in file order) but the bad ones, and reports
        them in file order. With shrink, a window whose first bad row comes early is cut
        to twice that distance (the rest is left to the next window). Returns how many
        rows were bad and the index after the last row settled."""
        while True:
            todo = [i for i in rows if i not in bad] if bad else rows
            error = self._try(batch, todo) if todo else None
            if error is None:
                if self.notices:
                    bad.update(self._set_aside(batch, todo))
                    todo = [i for i in todo if i not in bad]
                return self._finish(batch, todo, bad), rows[-1] + 1
            named = self._named_row(batch, todo, error)
            if named is not None:
                if shrink and not bad and isinstance(rows, range):
                    rows = rows[:max(MIN_WINDOW, 2 * (named - rows.start + 1))]
                bad[named] = (describe(error), error.sqlstate)
            elif len(todo) == 1:
                bad[todo[0]] = (describe(error), error.sqlstate)
            else:
                half = len(rows) // 2
                found = 0
                for part in (rows[:half], rows[half:]):
                    found += self._settle(batch, part, {i: r for i, r in bad.items()
                                                        if i in part})[0]
                return found, rows[-1] + 1

    def _finish(self, batch: Batch, loaded: Sequence[int], bad: dict[int, Reason]) -> int:
        """Reports a settled window: `loaded` went in under the current savepoint."""
        order = sorted(bad)
        allowed = self.report.allowance()
        if allowed is not None and allowed <= len(order) and loaded:
            # The window ends the load: keep only the rows before the last bad row allowed.
            stop = order[allowed - 1]
            before = [i for i in loaded if i < stop]
            if len(before) < len(loaded):
                self.conn.execute("ROLLBACK TO SAVEPOINT loader_attempt")
                self.savepoint = "clean"
                if before and self._try(batch, before) is not None:
                    raise LoadError(f"rows of {self.table.qualified} before line "
                                    f"{batch.lines[stop]} failed to load a second time")
                loaded = before
        self.report.loaded(len(loaded))
        for i in order:
            self.report.invalid(batch.lines[i], batch.records[i], *bad[i])
        return len(order)

    @staticmethod
    def _named_row(batch: Batch, todo: Sequence[int], error: psycopg.Error) -> int | None:
        """The row PostgreSQL's error names, when it can be trusted."""
        if not batch.one_line_records:
            return None
        line = copy_line(error)
        if line is None or not 1 <= line <= len(todo):
            return None
        return todo[line - 1]

    def _try(self, batch: Batch, todo: Sequence[int]) -> psycopg.Error | None:
        """Runs one attempt under a savepoint; the row error that undid it, if any."""
        if len(todo) == len(batch):
            data = batch.data
        elif isinstance(todo, range):
            data = b"".join(batch.rows[todo.start:todo.stop])
        else:
            records = batch.rows
            data = b"".join([records[i] for i in todo])
        self.notices.clear()
        if self.savepoint is None:
            self.conn.execute("SAVEPOINT loader_attempt")
        elif self.savepoint == "used":
            self.conn.execute("RELEASE SAVEPOINT loader_attempt; SAVEPOINT loader_attempt")
        try:
            self.attempt(data, batch.one_line_records)
        except psycopg.Error as error:
            if not is_row_error(error):
                raise fatal(error, self.table.qualified) from None
            self.conn.execute("ROLLBACK TO SAVEPOINT loader_attempt")
            self.savepoint = "clean"
            return error
        self.savepoint = "used"
        return None

    def _copy(self, data: bytes, one_line_records: bool = False) -> None:
        # Notice line numbers name rows only when every record is one line.
        statement = self.skip_sql if one_line_records and self.skip_sql else self.copy_sql
        with self.conn.cursor().copy(statement) as copy:
            copy.write(data)

    def _notice(self, diagnostic: psycopg.errors.Diagnostic) -> None:
        match = _SKIPPED.match(diagnostic.message_primary or "")
        if match:
            self.notices.append((int(match.group(1)), match.group(2)))

    def _set_aside(self, batch: Batch, todo: Sequence[int]) -> dict[int, Reason]:
        """The rows the last COPY set aside, with the reason their field was refused."""
        rows, values, types = [], [], []
        for line, column in self.notices:
            if not 1 <= line <= len(todo) or column not in self.table.columns:
                raise LoadError(f"COPY into {self.table.qualified} set aside line {line} "
                                f"(column {column}), which is not a row the loader sent")
            row = todo[line - 1]
            text = batch.rows[row].decode("utf-8", "replace").rstrip("\r\n")
            fields = split_fields(text, self.delimiter, self.quote)
            position = self.table.columns.index(column)
            rows.append((row, column))
            values.append(fields[position] if position < len(fields) else "")
            types.append(self.table.types[position])
        reasons = self.conn.execute(
            """SELECT e.message, e.detail, e.sql_error_code
               FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS f(value, type, n)
               CROSS JOIN LATERAL pg_input_error_info(f.value, f.type) AS e
               ORDER BY f.n""", (values, types)).fetchall()
        return {row: (f"{message} (column {column})" + (f": {detail}" if detail else ""), state)
                for (row, column), (message, detail, state) in zip(rows, reasons, strict=True)}

    # --upsert: COPY into a temporary table, then one INSERT ... ON CONFLICT
    # per attempt; within an attempt the last row of a key wins.

    def _prepare_upsert(self) -> None:
        table = self.table
        if not table.key:
            raise LoadError(f"--upsert needs a primary key; {table.qualified} has none")
        generated = [column for column in table.key if column not in table.columns]
        if generated:
            raise LoadError(
                f"cannot --upsert into {table.qualified}: its primary key "
                f"({', '.join(generated)}) is generated by the database, not read from the file")
        columns = sql.SQL(", ").join(map(sql.Identifier, table.columns))
        key = sql.SQL(", ").join(map(sql.Identifier, table.key))
        self.conn.execute(sql.SQL("DROP TABLE IF EXISTS pg_temp.{}").format(_TEMP))
        self.conn.execute(sql.SQL(
            "CREATE TEMPORARY TABLE {} AS SELECT {} FROM {} WITH NO DATA").format(
                _TEMP, columns, table.identifier))
        self.conn.execute(sql.SQL(
            "ALTER TABLE {} ADD COLUMN loader_position bigint GENERATED ALWAYS AS IDENTITY"
        ).format(_TEMP))
        updates = [sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(column))
                   for column in table.columns if column not in table.key]
        action = (sql.SQL("DO UPDATE SET {}").format(sql.SQL(", ").join(updates))
                  if updates else sql.SQL("DO NOTHING"))
        self.merge_sql = sql.SQL(
            "INSERT INTO {target} ({columns}) "
            "SELECT DISTINCT ON ({key}) {columns} FROM {temp} ORDER BY {key}, loader_position DESC "
            "ON CONFLICT ({key}) {action}").format(
                target=table.identifier, columns=columns, key=key, temp=_TEMP, action=action)

    def _upsert(self, data: bytes, one_line_records: bool = False) -> None:
        self.conn.execute(sql.SQL("TRUNCATE {}").format(_TEMP))
        self._copy(data)
        self.conn.execute(self.merge_sql)

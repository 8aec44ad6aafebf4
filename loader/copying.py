"""Loading batches into a table with COPY, narrowing a failed batch down to its bad rows.

Each attempt runs under a savepoint. When one fails:
- if PostgreSQL names the line (type errors, wrong column count, CHECK,
  NOT NULL, duplicate key, invalid UTF-8...), the rows before it are loaded
  again in one COPY, that row is reported, and loading resumes after it;
- otherwise (foreign keys are checked at the end of the statement) the
  attempt is split in halves until the bad row stands alone.
After an error the next attempt is about twice as long as the stretch of
good rows just seen, and doubles after every success: a file with scattered
bad rows does not send the rest of a large batch again for every one of them.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg
from psycopg import sql

from loader.catalog import Table
from loader.errors import LoadError, copy_line, describe, fatal, is_row_error
from loader.report import Report
from loader.source import Batch

# Attempts never shrink below this many rows unless bisecting.
MIN_ATTEMPT = 64
_TEMP = sql.Identifier("loader_upsert")


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
        self.attempt_size = batch_size
        self.attempt: Callable[[bytes], None]
        if upsert:
            self._prepare_upsert()
            self.copy_sql = copy_statement(_TEMP, table.columns, delimiter, quote, null)
            self.attempt = self._upsert
        else:
            self.copy_sql = copy_statement(table.identifier, table.columns, delimiter, quote, null)
            self.attempt = self._copy

    def load(self, batch: Batch) -> None:
        """Loads one batch inside the caller's transaction."""
        self._settle(batch, 0, len(batch))

    def _settle(self, batch: Batch, lo: int, hi: int) -> None:
        """Loads records[lo:hi] in file order: good rows loaded, bad rows reported."""
        while lo < hi:
            end = min(hi, lo + self.attempt_size)
            error = self._try(batch, lo, end)
            if error is None:
                self.report.loaded(end - lo)
                lo = end
                self.attempt_size = min(2 * self.attempt_size, self.batch_size)
                continue
            bad = self._named_row(batch, lo, end, error)
            if bad is not None:
                self.attempt_size = max(MIN_ATTEMPT, 2 * (bad - lo))
                self._settle(batch, lo, bad)
                self.report.invalid(batch.lines[bad], batch.records[bad], describe(error))
                lo = bad + 1
            elif end - lo == 1:
                self.report.invalid(batch.lines[lo], batch.records[lo], describe(error))
                lo = end
            else:
                mid = (lo + end) // 2
                self.attempt_size = mid - lo
                self._settle(batch, lo, mid)
                self._settle(batch, mid, end)
                lo = end

    @staticmethod
    def _named_row(batch: Batch, lo: int, end: int, error: psycopg.Error) -> int | None:
        """Index of the row PostgreSQL's error names, when it can be trusted."""
        if not batch.one_line_records:
            return None
        line = copy_line(error)
        if line is None or not 1 <= line <= end - lo:
            return None
        return lo + line - 1

    def _try(self, batch: Batch, lo: int, end: int) -> psycopg.Error | None:
        """Runs one attempt under a savepoint; the row error that undid it, if any."""
        data = batch.data if (lo, end) == (0, len(batch)) else b"".join(batch.records[lo:end])
        self.conn.execute("SAVEPOINT loader_attempt")
        try:
            self.attempt(data)
        except psycopg.Error as error:
            if not is_row_error(error):
                raise fatal(error, self.table.qualified) from None
            self.conn.execute("ROLLBACK TO SAVEPOINT loader_attempt")
            return error
        self.conn.execute("RELEASE SAVEPOINT loader_attempt")
        return None

    def _copy(self, data: bytes) -> None:
        with self.conn.cursor().copy(self.copy_sql) as copy:
            copy.write(data)

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

    def _upsert(self, data: bytes) -> None:
        self.conn.execute(sql.SQL("TRUNCATE {}").format(_TEMP))
        self._copy(data)
        self.conn.execute(self.merge_sql)

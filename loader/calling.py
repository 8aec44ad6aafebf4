"""--procedure: one function call per row, each call its own transaction (as at a gate).

A row is invalid when it cannot be split into the function's arguments or
when the function raises an error for it (MT001 Unknown station...); the
function's message is the reason. A function that answers with a decision
(`accepted` false, a payment `blocked`) has treated the row: the row counts
as loaded, and the summary counts the decisions. As in the bridge's messages,
a timestamp may be an epoch number (seconds, milliseconds or microseconds, by
magnitude: metro.epoch; other text is PostgreSQL's to read), whitespace around
a field is left out, and empty trailing optional arguments are left out too
(ts: now()).
"""

from __future__ import annotations

import csv
from decimal import Decimal, InvalidOperation

import psycopg
from psycopg import sql

from metro import epoch

from .catalog import Function
from .errors import describe, fatal, is_row_error
from .report import Report
from .source import Batch, split_fields

# A function's first result column that is a decision, and how the summary names
# its true and false answers.
DECISIONS = {"accepted": ("accepted", "refused"), "blocked": ("blocked", "passed")}
TIMESTAMP = "timestamp with time zone"


class CallLoader:
    def __init__(self, conn: psycopg.Connection, function: Function, report: Report, *,
                 delimiter: str, quote: str, null: str | None) -> None:
        self.conn = conn
        self.function = function
        self.report = report
        self.delimiter = delimiter
        self.quote = quote
        self.null = "" if null is None else null
        self.calls = {count: self._call(count)
                      for count in range(function.required, len(function.arg_types) + 1)}

    def _call(self, count: int) -> sql.Composed:
        arguments = [sql.SQL("%s::" + arg_type) for arg_type in self.function.arg_types[:count]]
        return sql.SQL("SELECT * FROM {}({})").format(
            sql.Identifier(self.function.schema, self.function.name),
            sql.SQL(", ").join(arguments))

    def load(self, batch: Batch) -> None:
        for line, raw in zip(batch.lines, batch.records, strict=True):
            fields = self._fields(raw)
            if isinstance(fields, str):
                self.report.invalid(line, raw, fields)
                continue
            try:
                cursor = self.conn.execute(self.calls[len(fields)], fields)
                result = cursor.fetchone()
            except psycopg.Error as error:
                if not is_row_error(error):
                    raise fatal(error, self.function.qualified) from None
                self.report.invalid(line, raw, describe(error), error.sqlstate)
                continue
            self.report.loaded(1)
            labels = DECISIONS.get(cursor.description[0].name) if cursor.description else None
            if labels and result and isinstance(result[0], bool):
                self.report.decided(result[0], labels)

    def _fields(self, raw: bytes) -> list[str | None] | str:
        """The row's arguments, or why the row cannot be a call."""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            return f'invalid byte sequence for encoding "UTF8": 0x{raw[error.start]:02x}'
        try:
            fields = split_fields(text.rstrip("\r\n"), self.delimiter, self.quote, strict=True)
        except csv.Error:
            return "unterminated CSV quoted field"
        if len(fields) not in self.calls:
            low, high = min(self.calls), max(self.calls)
            wanted = str(high) if low == high else f"{low} to {high}"
            return (f"{self.function.qualified} takes {wanted} arguments, "
                    f"the row has {len(fields)} fields")
        # Whitespace around a field is no part of an argument (ids, amounts, times), as
        # in the bridge's CSV messages.
        values = [None if field == self.null else field for field in map(str.strip, fields)]
        while len(values) > self.function.required and values[-1] is None:
            values.pop()
        for i, value in enumerate(values):
            if value is not None and self.function.arg_types[i] == TIMESTAMP:
                values[i] = _timestamp(value)
        return values


def _timestamp(text: str) -> str:
    """A timestamp argument as PostgreSQL takes it: an epoch number in range as the instant
    it stands for; any other text as it is, for PostgreSQL to read (20261130 is a date)."""
    if not epoch.NUMBER.fullmatch(text):
        return text
    try:
        at = epoch.instant(Decimal(text))
    except InvalidOperation:  # digits Decimal does not take
        return text
    return at.isoformat() if at is not None and at < epoch.LATEST else text

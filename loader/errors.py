"""Which errors stop a load and which only reject one row."""

from __future__ import annotations

import re

import psycopg

from metro.errors import ErrorCodes, MetroError

# The database's error codes (metro.errors.ErrorCodes), read once per file by
# use_error_codes(): which errors reject one row and which stop the load.
_codes = ErrorCodes()
# COPY's error context: `COPY cards, line 12, column balance: "abc"`.
_COPY_LINE = re.compile(r"^COPY .*?, line (\d+)(?:, column ([^:]+))?")


class LoadError(MetroError):
    """The load cannot go on; reported as one line, exit status 2."""


def is_row_error(error: psycopg.Error) -> bool:
    """Whether the error rejects the row it came from (the load goes on) rather
    than stopping the load."""
    return _codes.is_row_level(error)


def use_error_codes(conn: psycopg.Connection) -> None:
    """Takes the codes and their row-level flags from metro.error_codes."""
    global _codes
    _codes = ErrorCodes.load(conn)


def copy_line(error: psycopg.Error) -> int | None:
    """The line of the COPY data the error is about, when PostgreSQL says."""
    match = _COPY_LINE.match(error.diag.context or "")
    return int(match.group(1)) if match else None


def describe(error: psycopg.Error) -> str:
    """PostgreSQL's message, with the column and the detail when it gives them."""
    message = error.diag.message_primary or str(error).strip()
    match = _COPY_LINE.match(error.diag.context or "")
    # Only a value's own error (class 22, or its domain's CHECK) is about the column COPY
    # was reading: a duplicate key found later names whichever column COPY read last.
    if match and match.group(2) and ((error.sqlstate or "").startswith("22")
                                     or error.diag.datatype_name):
        message += f" (column {match.group(2)})"
    detail = error.diag.message_detail
    return f"{message}: {detail}" if detail else message


def fatal(error: psycopg.Error, table: str) -> LoadError:
    hint = error.diag.message_hint
    text = f"loading {table} failed: {describe(error)}".rstrip(".")
    return LoadError(f"{text}. {hint.rstrip('.')}" if hint else text)

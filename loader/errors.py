"""Which errors stop a load and which only reject one row."""

from __future__ import annotations

import re

import psycopg

from metro.errors import MetroError

# SQLSTATE classes caused by the content of one row: data exceptions (22),
# integrity constraint violations (23), PL/pgSQL RAISE (P0) and the metro
# argument errors MT001..MT005. Everything else (permissions, a lost
# connection, MT006 on an append-only table...) is about the load, not a row.
_ROW_CLASSES = ("22", "23", "P0")
_ROW_STATES = ("MT001", "MT002", "MT003", "MT004", "MT005")
# COPY's error context: `COPY cards, line 12, column balance: "abc"`.
_COPY_LINE = re.compile(r"^COPY .*?, line (\d+)(?:, column ([^:]+))?")


class LoadError(MetroError):
    """The load cannot go on; reported as one line, exit status 2."""


def is_row_error(error: psycopg.Error) -> bool:
    state = error.sqlstate or ""
    return state[:2] in _ROW_CLASSES or state in _ROW_STATES


def copy_line(error: psycopg.Error) -> int | None:
    """The line of the COPY data the error is about, when PostgreSQL says."""
    match = _COPY_LINE.match(error.diag.context or "")
    return int(match.group(1)) if match else None


def describe(error: psycopg.Error) -> str:
    """PostgreSQL's message, with the column and the detail when it gives them."""
    message = error.diag.message_primary or str(error).strip()
    match = _COPY_LINE.match(error.diag.context or "")
    if match and match.group(2):
        message += f" (column {match.group(2)})"
    detail = error.diag.message_detail
    return f"{message}: {detail}" if detail else message


def fatal(error: psycopg.Error, table: str) -> LoadError:
    hint = error.diag.message_hint
    text = f"loading {table} failed: {describe(error)}".rstrip(".")
    return LoadError(f"{text}. {hint.rstrip('.')}" if hint else text)

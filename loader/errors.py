"""Which errors stop a load and which only reject one row."""

from __future__ import annotations

import re

import psycopg
from psycopg import sql

from metro.errors import MetroError
from metro.schema import SCHEMA

# Which errors are about one row: the SQLSTATE classes caused by a row's
# content, data exceptions (22), integrity constraint violations (23) and
# PL/pgSQL RAISE (P0), and every metro code (MTxxx: the functions' argument
# errors, MT001 unknown station ... MT007 invalid transaction_id, MT008 no
# risk rule). Everything else (permissions, a lost connection, a cancelled
# statement, an undefined object...) is about the load, not a row.
_ROW_CLASSES = ("22", "23", "P0")
_METRO_PREFIX = "MT"
# What the database says about its own codes, when it says it (metro.error_codes,
# sqlstate -> row_level): it wins over the rules above. Read by use_error_codes().
_DATABASE_CODES: dict[str, bool] = {}
# COPY's error context: `COPY cards, line 12, column balance: "abc"`.
_COPY_LINE = re.compile(r"^COPY .*?, line (\d+)(?:, column ([^:]+))?")


class LoadError(MetroError):
    """The load cannot go on; reported as one line, exit status 2."""


def is_row_error(error: psycopg.Error) -> bool:
    """Whether the error rejects the row it came from (the load goes on) rather
    than stopping the load."""
    return is_row_state(error.sqlstate or "")


def is_row_state(state: str) -> bool:
    known = _DATABASE_CODES.get(state)
    if known is not None:
        return known
    return state.startswith(_METRO_PREFIX) or state[:2] in _ROW_CLASSES


def use_error_codes(conn: psycopg.Connection) -> None:
    """Takes the row-level flag of each code from metro.error_codes when the database
    has that table; without it (older schemas) the rules above decide alone."""
    _DATABASE_CODES.clear()
    present = conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                           (f"{SCHEMA}.error_codes",)).fetchone()
    if not (present and present[0]):
        return
    try:
        rows = conn.execute(sql.SQL("SELECT sqlstate, row_level FROM {} "
                                    "WHERE row_level IS NOT NULL").format(
            sql.Identifier(SCHEMA, "error_codes"))).fetchall()
    except (psycopg.errors.UndefinedColumn, psycopg.errors.InsufficientPrivilege):
        return  # another shape of the table, or not ours to read: the rules above hold
    _DATABASE_CODES.update((str(state).strip(), bool(row_level)) for state, row_level in rows)


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

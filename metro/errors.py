"""The one map of errors: metro's own exceptions, and the database's error codes.

What each SQLSTATE means and whether it is about one row (bad input: reject that
row or message and go on) or about the whole job is a fact of the database, the
table metro.error_codes. ErrorCodes reads it once per connection; the loader, the
bridge and translate() below ask it, and the README's table is that table.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

# Codes the table does not list: data exceptions (22), integrity constraint
# violations (23), a plain PL/pgSQL RAISE (P0) and any metro code (MTxxx) are about
# the input; anything else (permissions, a lost connection, a cancelled statement,
# an undefined object) is about the job.
_ROW_CLASSES = ("22", "23", "P0", "MT")


class MetroError(Exception):
    """An error metro reports to the user with a one-line message."""


class DatabaseUnavailable(MetroError):
    """The selected PostgreSQL cannot be reached or started."""


@dataclass(frozen=True)
class ErrorCode:
    sqlstate: str
    name: str
    meaning: str
    row_level: bool


class ErrorCodes:
    """metro.error_codes as the database holds it (empty before the schema is installed)."""

    def __init__(self, codes: dict[str, ErrorCode] | None = None) -> None:
        self.codes = codes or {}

    @classmethod
    def load(cls, conn: psycopg.Connection) -> ErrorCodes:
        present = conn.execute("SELECT to_regclass('metro.error_codes') IS NOT NULL").fetchone()
        if not (present and present[0]):
            return cls()
        rows = conn.execute("SELECT sqlstate, name, meaning, row_level FROM metro.error_codes"
                            ).fetchall()
        return cls({row[0]: ErrorCode(*row) for row in rows})

    def is_row_level(self, error: psycopg.Error) -> bool:
        """Whether the error refuses the row or message it came from (the job goes on)."""
        state = error.sqlstate or ""
        code = self.codes.get(state)
        if code is not None:
            return code.row_level
        return state[:2] in _ROW_CLASSES


class RefusedInput(MetroError):
    """A function refused its arguments with one of metro's codes; nothing was written."""

    def __init__(self, code: ErrorCode, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.hint = hint


def translate(error: psycopg.Error, codes: ErrorCodes) -> Exception:
    """RefusedInput for a code of metro.error_codes; DatabaseUnavailable for a lost
    server; the error itself otherwise."""
    code = codes.codes.get(error.sqlstate or "")
    if code is not None:
        return RefusedInput(code, error.diag.message_primary or str(error).strip(),
                            error.diag.message_hint)
    if isinstance(error, psycopg.OperationalError):
        return DatabaseUnavailable(" ".join(str(error).split()))
    return error

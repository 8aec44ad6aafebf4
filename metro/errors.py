"""One place that maps PostgreSQL errors raised by the metro functions to Python exceptions.

The SQLSTATEs are documented in the README ("Errors") and raised by procedures/.
"""

from __future__ import annotations

import psycopg


class MetroError(Exception):
    """An error metro reports to the user with a one-line message."""


class DatabaseUnavailable(MetroError):
    """The selected PostgreSQL cannot be reached or started."""


class InvalidArgument(MetroError):
    """A function refused its arguments; nothing was written."""

    def __init__(self, sqlstate: str, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.hint = hint


class UnknownStation(InvalidArgument):
    """MT001."""


class UnknownTrain(InvalidArgument):
    """MT002."""


class InvalidAmount(InvalidArgument):
    """MT003."""


class NullArgument(InvalidArgument):
    """MT004."""


class InvalidCode(InvalidArgument):
    """MT005."""


class RefusedChange(InvalidArgument):
    """MT006: an UPDATE or DELETE of card_events, removing the settings row."""


class InvalidTransaction(InvalidArgument):
    """MT007: a payment's transaction_id is empty or too long."""


class NoRiskRule(InvalidArgument):
    """MT008: no row of risk_rules covers the payment."""


SQLSTATE_ERRORS: dict[str, type[InvalidArgument]] = {
    "MT001": UnknownStation,
    "MT002": UnknownTrain,
    "MT003": InvalidAmount,
    "MT004": NullArgument,
    "MT005": InvalidCode,
    "MT006": RefusedChange,
    "MT007": InvalidTransaction,
    "MT008": NoRiskRule,
}


def translate(error: psycopg.Error) -> Exception:
    """The metro exception for a PostgreSQL error, or the error itself when it is not ours."""
    sqlstate = error.sqlstate or ""
    cls = SQLSTATE_ERRORS.get(sqlstate)
    if cls is None:
        if isinstance(error, psycopg.OperationalError):
            return DatabaseUnavailable(str(error).strip())
        return error
    return cls(sqlstate, error.diag.message_primary or str(error), error.diag.message_hint)

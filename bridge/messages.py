"""Inbound message values: VoltDB's CSV lines or JSON objects, parsed into function arguments.

TRAINTOPIC: `train_id,station_id,activity_type,timestamp`
            or {"train_id": 1, "station_id": 4, "activity_type": 1, "ts": "..."}
RECHARGE:   `card_id,amount,station_id[,timestamp]`
            or {"card_id": 42, "amount": 2000, "station_id": 4, "ts": "..."} (ts optional)
transaction_topic:
            {"transaction_id": "p-1", "account_id": 7, "amount": 5000.01, "timestamp": "..."}
            or `transaction_id,account_id,amount[,timestamp]` (timestamp optional)

In JSON objects `timestamp` and `ts` are the same field. A payment amount is
currency units, a JSON number or a decimal string, kept exact (never a float).

A timestamp is ISO 8601 (`2026-11-21T08:15:00.250+00:00`, `Z`, a space instead
of `T`; without an offset it is UTC) or an integer count of microseconds since
the Unix epoch (VoltDB's TIMESTAMP unit). Every problem is an InvalidMessage
whose text says what is wrong, for the dead-letter table.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from bridge.topics import PAYMENT_TOPIC, RECHARGE_TOPIC, TRAIN_TOPIC

# Microsecond counts below this (1973-03-03) are almost surely milliseconds or seconds.
_MIN_EPOCH_MICROS = 10**14
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INT_BOUNDS = {32: 2**31, 64: 2**63}


class InvalidMessage(ValueError):
    """A message value that cannot become a function call."""


@dataclass(frozen=True)
class TrainEvent:
    train_id: int
    station_id: int
    activity_type: int
    ts: datetime


@dataclass(frozen=True)
class Recharge:
    card_id: int
    amount: int
    station_id: int
    ts: datetime | None


@dataclass(frozen=True)
class Payment:
    transaction_id: str
    account_id: int
    amount: Decimal
    ts: datetime | None


def parse_timestamp(text: str) -> datetime:
    text = text.strip()
    if text.isdigit():
        micros = int(text)
        if micros < _MIN_EPOCH_MICROS:
            raise InvalidMessage(f"timestamp {text} is not in epoch microseconds "
                                 "(it would be before 1973; milliseconds or seconds?)")
        try:
            return _EPOCH + timedelta(microseconds=micros)
        except OverflowError:
            raise InvalidMessage(f"timestamp {text} is out of range") from None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidMessage(f"timestamp {text!r} is neither ISO 8601 nor epoch "
                             "microseconds") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _integer(value: Any, name: str, bits: int = 32) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidMessage(f"{name} must be an integer, got {value!r}")
    text = str(value).strip()
    try:
        number = int(text)
    except ValueError:
        raise InvalidMessage(f"{name} must be an integer, got {text!r}") from None
    bound = _INT_BOUNDS[bits]
    if not -bound <= number < bound:
        raise InvalidMessage(f"{name} {number} does not fit in {bits} bits")
    return number


def _decimal(value: Any, name: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | str | Decimal):
        raise InvalidMessage(f"{name} must be a decimal number, got {value!r}")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise InvalidMessage(f"{name} must be a decimal number, got {str(value)!r}") from None
    if not number.is_finite():
        raise InvalidMessage(f"{name} must be a decimal number, got {str(value)!r}")
    return number


def _identifier(value: Any, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidMessage(f"{name} must be a string or an integer, got {value!r}")
    return str(value)


def _fields(value: bytes, names: tuple[str, ...], optional: tuple[str, ...] = (),
            parse_float: Callable[[str], Any] = float) -> dict[str, Any]:
    """The named fields of a CSV line or a JSON object; optional ones may be absent.
    JSON numbers with a fraction or exponent become parse_float of their text."""
    try:
        text = value.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise InvalidMessage("value is not UTF-8 text") from None
    if not text:
        raise InvalidMessage("value is empty")
    if text.startswith("{"):
        try:
            obj = json.loads(text, parse_float=parse_float)
        except json.JSONDecodeError as error:
            raise InvalidMessage(f"value is not valid JSON: {error.msg} at "
                                 f"character {error.pos}") from None
        if "timestamp" in obj and "ts" not in obj:
            obj["ts"] = obj.pop("timestamp")
        missing = [name for name in names if obj.get(name) is None]
        if missing:
            raise InvalidMessage(f"JSON object lacks {', '.join(missing)}")
        return {name: obj.get(name) for name in names + optional}
    row = next(csv.reader([text]))
    expected = f"{len(names)}" + (f" or {len(names) + len(optional)}" if optional else "")
    if not len(names) <= len(row) <= len(names) + len(optional):
        raise InvalidMessage(f"expected {expected} comma-separated fields "
                             f"({','.join(names + optional)}), got {len(row)}")
    fields: dict[str, Any] = {name: text.strip() or None
                              for name, text in zip(names + optional, row, strict=False)}
    empty = [name for name in names if fields[name] is None]
    if empty:
        raise InvalidMessage(f"empty field: {', '.join(empty)}")
    return {name: fields.get(name) for name in names + optional}


def parse_train_event(value: bytes) -> TrainEvent:
    fields = _fields(value, ("train_id", "station_id", "activity_type", "ts"))
    return TrainEvent(_integer(fields["train_id"], "train_id"),
                      _integer(fields["station_id"], "station_id"),
                      _integer(fields["activity_type"], "activity_type"),
                      parse_timestamp(str(fields["ts"])))


def parse_recharge(value: bytes) -> Recharge:
    fields = _fields(value, ("card_id", "amount", "station_id"), ("ts",))
    ts = fields["ts"]
    return Recharge(_integer(fields["card_id"], "card_id", 64),
                    _integer(fields["amount"], "amount"),
                    _integer(fields["station_id"], "station_id"),
                    None if ts is None else parse_timestamp(str(ts)))


def parse_payment(value: bytes) -> Payment:
    fields = _fields(value, ("transaction_id", "account_id", "amount"), ("ts",),
                     parse_float=Decimal)
    ts = fields["ts"]
    return Payment(_identifier(fields["transaction_id"], "transaction_id"),
                   _integer(fields["account_id"], "account_id", 64),
                   _decimal(fields["amount"], "amount"),
                   None if ts is None else parse_timestamp(str(ts)))


# The function call each inbound topic feeds; ts NULL means now().
CALLS = {
    TRAIN_TOPIC: (parse_train_event,
                  "SELECT metro.record_train_event(%s, %s, %s, %s)"),
    RECHARGE_TOPIC: (parse_recharge,
                     "SELECT * FROM metro.recharge_card(%s, %s, %s,"
                     " coalesce(%s::timestamptz, now()))"),
    PAYMENT_TOPIC: (parse_payment,
                    "SELECT * FROM metro.evaluate_transaction(%s, %s::text, %s,"
                    " coalesce(%s::timestamptz, now()))"),
}


# Topics whose parsed messages can also be applied many in one set-wise call: the
# function takes one array per message field, in field order, and decides them as
# single calls in input order would.
BATCH_CALLS = {
    PAYMENT_TOPIC: "SELECT count(*) FROM metro.evaluate_transactions(%s::text[],"
                   " %s::text[], %s::numeric[], %s::timestamptz[])",
}


def parse_message(topic: str, value: bytes | None) -> Any:
    """The message of topic that value holds (one of the dataclasses above)."""
    if value is None:
        raise InvalidMessage("value is empty (tombstone)")
    parse, _ = CALLS[topic]
    return parse(value)


def call_for(topic: str, value: bytes | None) -> tuple[str, tuple[Any, ...]]:
    """The SQL and arguments that apply one message of topic."""
    return CALLS[topic][1], tuple(vars(parse_message(topic, value)).values())


def batch_call_for(topic: str, messages: list[Any]) -> tuple[str, tuple[list[Any], ...]]:
    """The SQL and arguments that apply the parsed messages of a BATCH_CALLS topic at once."""
    fields = [tuple(vars(message).values()) for message in messages]
    return BATCH_CALLS[topic], tuple(list(column) for column in zip(*fields, strict=True))

"""Inbound message values: VoltDB's CSV lines or JSON objects, parsed into function arguments.

TRAINTOPIC: `train_id,station_id,activity_type,timestamp`
            or {"train_id": 1, "station_id": 4, "activity_type": 1, "ts": "..."}
RECHARGE:   `card_id,amount,station_id[,timestamp]`
            or {"card_id": 42, "amount": 2000, "station_id": 4, "ts": "..."} (ts optional)
transaction_topic:
            {"transaction_id": "tx1001", "account_id": "account123", "amount": 12000.0,
             "timestamp": 1735862698.123}
            or `transaction_id,account_id,amount[,timestamp]` (timestamp optional)

In JSON objects `timestamp` and `ts` are the same field; JSON numbers are read
exactly from their text (never through a float); an integer field refuses
2000.0, which may as well mean 2000 units as 2000 cents. A leading byte order
mark is ignored. A payment amount is currency
units, a JSON number or a decimal string. An account id is text: a JSON integer
becomes its decimal digits, and a string loses the whitespace around it, as a
CSV field does.

A timestamp is either ISO 8601 (`2026-11-21T08:15:00.250+00:00`, `Z`, a space
instead of `T`; without an offset it is UTC) or an epoch number read by its
magnitude (metro.epoch): seconds as Python's time.time() gives them
(fractions allowed), milliseconds as Java's currentTimeMillis(), or
microseconds (VoltDB's TIMESTAMP unit); fractions of a microsecond are rounded
to the nearest one. Every timestamp must lie in [2000-01-01, 2200-01-01) UTC.
An absent or empty optional timestamp is None here; the bridge then uses the
Kafka record's own timestamp (record_timestamp).

Every problem is an InvalidMessage whose text says what is wrong, for the
dead-letter table; parsing never raises anything else, whatever the bytes.
"""

from __future__ import annotations

import csv
import json
import re
import reprlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from metro import calls, epoch
from metro.epoch import EARLIEST, EPOCH, LATEST
from metro.topics import PAYMENT_TOPIC, RECHARGE_TOPIC, TRAIN_TOPIC

_INT_BOUNDS = {32: 2**31, 64: 2**63}
_INTEGER = re.compile(r"[+-]?[0-9]+")
# JSON integers longer than this are kept as Decimal (int() refuses > 4300 digits).
_JSON_INT_DIGITS = 100
_REASON_MAX = 1000


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
    account_id: str
    amount: Decimal
    ts: datetime | None


class _Shown(reprlib.Repr):
    """Short, one-line renderings of values for reasons: strings quoted, numbers as written."""

    def __init__(self) -> None:
        super().__init__()
        self.maxstring = self.maxother = 60
        self.maxlong = 40
        self.maxlevel = 3

    def repr_int(self, value: int, level: int) -> str:
        return _number_text(str(value))

    def repr_Decimal(self, value: Decimal, level: int) -> str:  # noqa: N802 (reprlib's naming)
        return _number_text(str(value))

    def repr_float(self, value: float, level: int) -> str:
        return repr(value)


def _number_text(text: str) -> str:
    """A number's text, its middle left out when it is long."""
    if len(text) <= 40:
        return text
    return f"{text[:18]}...{text[-18:]} ({len(text)} characters)"


_show = _Shown().repr


def reason_text(text: str) -> str:
    """A reason fit for the dead-letter table: no NUL, at most _REASON_MAX characters."""
    text = text.replace("\x00", "\\x00")
    return text if len(text) <= _REASON_MAX else text[:_REASON_MAX - 3] + "..."


def _in_range(value: datetime, shown: str, what: str = "timestamp") -> datetime:
    try:
        inside = EARLIEST <= value < LATEST
    except OverflowError:  # pragma: no cover - aware comparisons near year 1 or 9999
        inside = False
    if not inside:
        raise InvalidMessage(f"{what} {shown} is outside 2000-01-01..2200-01-01 (UTC)")
    return value


def _from_epoch(number: Decimal, shown: str) -> datetime:
    """The instant an epoch number stands for, by its magnitude (metro.epoch)."""
    if not number.is_finite():
        raise InvalidMessage(f"timestamp {shown} is not a finite number")
    at = epoch.instant(number)
    if at is None:
        raise InvalidMessage(f"timestamp {shown} {epoch.OUTSIDE}")
    return _in_range(at, shown)


def parse_timestamp(value: Any) -> datetime:
    """ISO 8601 text, or an epoch number (int, Decimal or its text) read by magnitude."""
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise InvalidMessage(f"timestamp must be ISO 8601 text or an epoch number, "
                             f"got {_show(value)}")
    if isinstance(value, int):
        return _from_epoch(Decimal(value), _show(value))
    if isinstance(value, Decimal):
        return _from_epoch(value, _show(value))
    text = value.strip()
    if epoch.NUMBER.fullmatch(text):
        try:
            number = Decimal(text)
        except InvalidOperation:  # digits Decimal does not take, an exponent past its range
            raise InvalidMessage(f"timestamp {_number_text(text)} is not a number metro reads"
                                 ) from None
        return _from_epoch(number, _number_text(text))
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidMessage(f"timestamp {_show(text)} is neither ISO 8601 nor an epoch "
                             "number") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return _in_range(parsed, _show(text))


def record_timestamp(milliseconds: int | None) -> datetime | None:
    """The instant of a Kafka record's own timestamp (epoch milliseconds); None when the
    record has none (-1)."""
    if milliseconds is None or milliseconds < 0:
        return None
    try:
        instant = EPOCH + timedelta(milliseconds=milliseconds)
    except OverflowError:
        raise InvalidMessage(f"Kafka record timestamp {milliseconds} ms is outside "
                             "2000-01-01..2200-01-01 (UTC)") from None
    return _in_range(instant, f"{milliseconds} ms ({instant.isoformat()})",
                     "Kafka record timestamp")


def _integer(value: Any, name: str, bits: int = 32) -> int:
    if isinstance(value, Decimal) and value.is_finite() and value.as_tuple().exponent == 0:
        value = str(value)  # a JSON integer too long for int()
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidMessage(f"{name} must be an integer, got {_show(value)}")
    text = str(value).strip() if isinstance(value, str) else None
    if text is not None:
        if not _INTEGER.fullmatch(text):
            raise InvalidMessage(f"{name} must be an integer, got {_show(text)}")
        if len(text.lstrip("+-").lstrip("0")) > 20:
            raise InvalidMessage(f"{name} {_number_text(text)} does not fit in {bits} bits")
        value = int(text)
    bound = _INT_BOUNDS[bits]
    if not -bound <= value < bound:
        raise InvalidMessage(f"{name} {_show(value)} does not fit in {bits} bits")
    return value


def _decimal(value: Any, name: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | str | Decimal):
        raise InvalidMessage(f"{name} must be a decimal number, got {_show(value)}")
    if isinstance(value, str):
        if not epoch.NUMBER.fullmatch(value.strip()):
            raise InvalidMessage(f"{name} must be a decimal number, got {_show(value)}")
        value = value.strip()
    try:
        number = Decimal(value)
    except InvalidOperation:  # pragma: no cover - excluded by epoch.NUMBER
        raise InvalidMessage(f"{name} must be a decimal number, got {_show(value)}") from None
    if not number.is_finite():
        raise InvalidMessage(f"{name} must be a decimal number, got {_show(value)}")
    return number


def _identifier(value: Any, name: str) -> str:
    """Text of an id: a string without the whitespace around it (as a CSV field), an
    integer as its decimal digits."""
    if isinstance(value, Decimal) and value.is_finite() and value.as_tuple().exponent == 0:
        value = str(value)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidMessage(f"{name} must be a string or an integer, got {_show(value)}")
    text = str(value).strip()
    if "\x00" in text:
        raise InvalidMessage(f"{name} contains a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidMessage(f"{name} is not valid Unicode text (a lone surrogate)") from None
    return text


def _json_int(text: str) -> int | Decimal:
    return int(text) if len(text) <= _JSON_INT_DIGITS else Decimal(text)


def _json_decimal(text: str) -> Decimal:
    # An exponent beyond what Python's decimal can hold (1e9999999999999999999) raises
    # InvalidOperation, which would otherwise escape the parser and stop the partition.
    try:
        return Decimal(text)
    except InvalidOperation:
        raise InvalidMessage(f"number {reprlib.repr(text)} is out of range") from None


def _json_constant(name: str) -> float:
    return float(name)  # NaN, Infinity, -Infinity: refused by the field checks


def _json_object(text: str) -> dict[str, Any] | None:
    """The object a JSON value holds; None if text is not JSON at all."""
    try:
        obj = json.loads(text, parse_float=_json_decimal, parse_int=_json_int,
                         parse_constant=_json_constant)
    except json.JSONDecodeError as error:
        if text.startswith("["):
            return None  # maybe a CSV line whose first field starts with "["
        raise InvalidMessage(f"value is not valid JSON: {error.msg} at "
                             f"character {error.pos}") from None
    except RecursionError:
        raise InvalidMessage("value is not valid JSON: nested too deeply") from None
    if isinstance(obj, list):
        raise InvalidMessage("value is a JSON array, not a JSON object")
    if not isinstance(obj, dict):  # pragma: no cover - text starts with { or [
        raise InvalidMessage("value is not a JSON object")
    return obj


def _csv_row(text: str) -> list[str]:
    try:
        rows = list(csv.reader([text], strict=True))
    except csv.Error as error:
        message = str(error).split(" - do you need")[0]
        raise InvalidMessage(f"value is not one CSV line: {message}") from None
    return rows[0] if rows else []


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _fields(value: bytes, names: tuple[str, ...],
            optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """The named fields of a CSV line or a JSON object; optional ones may be absent or
    empty (None). JSON numbers come as int or Decimal, never float."""
    try:
        # A byte order mark (some producers write one) is not data.
        text = value.decode("utf-8").removeprefix("\ufeff").strip()
    except UnicodeDecodeError:
        raise InvalidMessage("value is not UTF-8 text") from None
    if not text:
        raise InvalidMessage("value is empty")
    if "\x00" in text:
        raise InvalidMessage("value contains a NUL character")
    obj = _json_object(text) if text.startswith(("{", "[")) else None
    if obj is not None:
        if "timestamp" in obj and "ts" not in obj:
            obj["ts"] = obj.pop("timestamp")
        missing = [name for name in names if _blank(obj.get(name))]
        if missing:
            raise InvalidMessage(f"JSON object lacks {', '.join(missing)}")
        return {name: None if _blank(obj.get(name)) else obj.get(name)
                for name in names + optional}
    row = _csv_row(text)
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
                      parse_timestamp(fields["ts"]))


def parse_recharge(value: bytes) -> Recharge:
    fields = _fields(value, ("card_id", "amount", "station_id"), ("ts",))
    ts = fields["ts"]
    return Recharge(_integer(fields["card_id"], "card_id", 64),
                    _integer(fields["amount"], "amount"),
                    _integer(fields["station_id"], "station_id"),
                    None if ts is None else parse_timestamp(ts))


def parse_payment(value: bytes) -> Payment:
    fields = _fields(value, ("transaction_id", "account_id", "amount"), ("ts",))
    ts = fields["ts"]
    return Payment(_identifier(fields["transaction_id"], "transaction_id"),
                   _identifier(fields["account_id"], "account_id"),
                   _decimal(fields["amount"], "amount"),
                   None if ts is None else parse_timestamp(ts))


# The SQL type evaluate_transaction(s) take account ids in: the one place to change
# when the functions move from bigint to text account ids.
# The function call each inbound topic feeds (metro.calls); ts NULL means now().
CALLS: dict[str, tuple[Callable[[bytes], Any], str]] = {
    TRAIN_TOPIC: (parse_train_event, calls.RECORD_TRAIN_EVENT.sql),
    RECHARGE_TOPIC: (parse_recharge, calls.RECHARGE_CARD.sql),
    PAYMENT_TOPIC: (parse_payment, calls.EVALUATE_TRANSACTION.sql),
}


# Topics whose parsed messages can also be applied many in one set-wise call: the
# function takes one array per message field, in field order, and decides them as
# single calls in input order would.
BATCH_CALLS = {
    PAYMENT_TOPIC: calls.EVALUATE_TRANSACTIONS.sql,
}


def parse_message(topic: str, value: bytes | None, record_ms: int | None = None) -> Any:
    """The message of topic that value holds (one of the dataclasses above).

    A message without a timestamp takes the Kafka record's (record_ms, epoch
    milliseconds) when given; otherwise its ts stays None (now() in the call).
    """
    if value is None:
        raise InvalidMessage("value is empty (tombstone)")
    parse, _ = CALLS[topic]
    message = parse(value)
    if message.ts is None and record_ms is not None:
        message = replace(message, ts=record_timestamp(record_ms))
    return message


def call_for(topic: str, value: bytes | None,
             record_ms: int | None = None) -> tuple[str, tuple[Any, ...]]:
    """The SQL and arguments that apply one message of topic."""
    return CALLS[topic][1], tuple(vars(parse_message(topic, value, record_ms)).values())


def batch_call_for(topic: str, messages: list[Any]) -> tuple[str, tuple[list[Any], ...]]:
    """The SQL and arguments that apply the parsed messages of a BATCH_CALLS topic at once."""
    fields = [tuple(vars(message).values()) for message in messages]
    return BATCH_CALLS[topic], tuple(list(column) for column in zip(*fields, strict=True))

"""What the simulators produce: timed events, and the outcome a sink reports for each.

Events say what happened in the simulated metro, not how it is delivered:
a sink (producers.sinks) turns them into function calls or messages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import ClassVar


@dataclass(slots=True)
class Event:
    due: float      # scheduled send time, seconds after the run started
    ts: datetime    # simulated time of the event, passed to the function

    label: ClassVar[str] = "event"  # how statistics name this kind of event

    @property
    def key(self) -> int:
        """Events with the same key are delivered in order (one card, one train)."""
        raise NotImplementedError


@dataclass(slots=True)
class CardEvent(Event):
    card_id: int

    @property
    def key(self) -> int:
        return self.card_id


@dataclass(slots=True)
class Swipe(CardEvent):
    station_id: int


@dataclass(slots=True)
class Entry(Swipe):
    label: ClassVar[str] = "entry"


@dataclass(slots=True)
class Exit(Swipe):
    label: ClassVar[str] = "exit"


@dataclass(slots=True)
class Recharge(CardEvent):
    label: ClassVar[str] = "recharge"
    amount: int     # cents
    station_id: int


@dataclass(slots=True)
class TrainMove(Event):
    label: ClassVar[str] = "train move"
    train_id: int
    station_id: int
    activity: int   # 0 arrival, 1 departure

    @property
    def key(self) -> int:
        return self.train_id


@dataclass(slots=True)
class Payment(Event):
    label: ClassVar[str] = "payment"
    transaction_id: str
    account_id: int
    amount: Decimal  # currency units, two decimals

    @property
    def key(self) -> int:
        return self.account_id


class Result(Enum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    FRAUD = "fraud"
    ERROR = "errors"


FRAUD_MESSAGE = "Fraudulent transaction"


@dataclass(slots=True, frozen=True)
class Outcome:
    result: Result
    message: str

    @staticmethod
    def of_decision(accepted: bool, message: str) -> Outcome:
        if accepted:
            return Outcome(Result.ACCEPTED, message)
        return Outcome(Result.FRAUD if message == FRAUD_MESSAGE else Result.REJECTED, message)

    @staticmethod
    def error(message: str) -> Outcome:
        return Outcome(Result.ERROR, message)


# What a sink calls once per event: the event, its outcome, the monotonic finish time.
Done = Callable[[Event, Outcome, float], None]

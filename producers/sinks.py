"""Sinks deliver simulated events and report each one's outcome.

The simulators only produce events (producers.events); a sink decides how they
reach the system. `DirectSink` calls the stored functions, one call per event,
each its own transaction. Another transport (Kafka topics) is another class
with the same methods.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from producers.channels import Channel, Pending, PipelineChannel, SerialChannel
from producers.events import Entry, Event, Exit, Outcome, Payment, Recharge, Swipe, TrainMove

Done = Callable[[Event, Outcome, float], None]  # event, outcome, monotonic finish time


class Sink(Protocol):
    async def start(self) -> None:
        """Connect; raise MetroError with a one-line message when that is impossible."""

    def submit(self, event: Event, done: Done) -> None:
        """Queue the event; `done` is called exactly once, with its outcome."""

    def flush(self) -> None:
        """Push queued events out (called after each batch of submits)."""

    def in_flight(self) -> int:
        """Events submitted whose outcome is not known yet."""

    def has_room(self) -> bool:
        """Whether another event may be submitted now (in-flight events are bounded)."""

    async def close(self) -> None:
        """Fail the events still in flight and disconnect."""


@dataclass(frozen=True)
class Statement:
    """A prepared function call: `sql` has %s placeholders, `decision` says it returns
    (accepted, message); otherwise it returns nothing and an answer means recorded."""
    name: str
    sql: str
    decision: bool = True

    @property
    def numbered_sql(self) -> str:
        """The same text with $1, $2 ... as libpq's prepared statements want."""
        parts = self.sql.split("%s")
        return "".join(part + (f"${n}" if n < len(parts) else "")
                       for n, part in enumerate(parts, start=1))


def swipe_arguments(swipe: Swipe) -> tuple[object, ...]:
    return (swipe.card_id, swipe.station_id, swipe.ts)


# How each kind of event becomes a call: the statement and its arguments.
Calls = dict[type[Event], tuple[Statement, Callable[..., tuple[object, ...]]]]

CALLS: Calls = {
    Entry: (Statement("validate_entry", "SELECT accepted, message FROM metro.validate_entry("
                      "%s::bigint, %s::integer, %s::timestamptz)"), swipe_arguments),
    Exit: (Statement("process_exit", "SELECT accepted, message FROM metro.process_exit("
                     "%s::bigint, %s::integer, %s::timestamptz)"), swipe_arguments),
    Recharge: (Statement("recharge_card", "SELECT accepted, message FROM metro.recharge_card("
                         "%s::bigint, %s::integer, %s::integer, %s::timestamptz)"),
               lambda e: (e.card_id, e.amount, e.station_id, e.ts)),
    TrainMove: (Statement("record_train_event", "SELECT metro.record_train_event("
                          "%s::integer, %s::integer, %s::integer, %s::timestamptz)",
                          decision=False),
                lambda e: (e.train_id, e.station_id, e.activity, e.ts)),
    # A blocked payment counts as rejected, with the rule's reason as its message.
    Payment: (Statement("evaluate_transaction", "SELECT NOT blocked, message FROM"
                        " metro.evaluate_transaction(%s::text, %s::text, %s::numeric,"
                        " %s::timestamptz)"),
              lambda e: (e.transaction_id, e.account_id, e.amount, e.ts)),
}

MODES = ("pipeline", "async")


class DirectSink:
    """Calls the stored functions over `connections` connections. Events with the same
    key (card, train) always use the same connection, so they run in order.

    mode "pipeline": each connection pipelines up to max_in_flight / connections calls,
    each followed by a Sync, so every call is still its own transaction.
    mode "async": each connection runs one call at a time; calls wait in its queue.
    """

    def __init__(self, dsn: str, *, mode: str = "pipeline", connections: int = 4,
                 max_in_flight: int = 10_000, report: Callable[[str], None] = print,
                 calls: Calls | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if connections < 1 or max_in_flight < 1:
            raise ValueError("connections and max_in_flight must be at least 1")
        self.calls = CALLS if calls is None else calls
        statements = list(dict.fromkeys(statement for statement, _ in self.calls.values()))
        channel = PipelineChannel if mode == "pipeline" else SerialChannel
        self.channels: Sequence[Channel] = [channel(number, dsn, statements, report)
                                            for number in range(1, connections + 1)]
        self.max_in_flight = max_in_flight

    async def start(self) -> None:
        try:
            await asyncio.gather(*(channel.start() for channel in self.channels))
        except BaseException:
            await self.close()
            raise

    def has_room(self) -> bool:
        return self.in_flight() < self.max_in_flight

    def submit(self, event: Event, done: Done) -> None:
        statement, arguments = self.calls[type(event)]
        channel = self.channels[event.key % len(self.channels)]
        channel.submit(Pending(event, statement, arguments(event), done))

    def flush(self) -> None:
        for channel in self.channels:
            channel.flush()

    def in_flight(self) -> int:
        return sum(channel.in_flight() for channel in self.channels)

    async def close(self) -> None:
        await asyncio.gather(*(channel.close() for channel in self.channels))

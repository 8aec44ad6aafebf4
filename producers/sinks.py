"""Sinks deliver simulated events and report each one's outcome.

The simulators only produce events (metro.producers.events); a sink decides how they
reach the system. `DirectSink` calls the stored functions, one call per event,
each its own transaction. Another transport (Kafka topics) is another class
with the same methods.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Protocol

from metro import calls
from metro.calls import Call

from .channels import Channel, Pending, PipelineChannel, SerialChannel
from .events import Done, Entry, Event, Exit, Payment, Recharge, Swipe, TrainMove


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


def swipe_arguments(swipe: Swipe) -> tuple[object, ...]:
    return (swipe.card_id, swipe.station_id, swipe.ts)


# How each kind of event becomes a call: the statement and its arguments.
Calls = dict[type[Event], tuple[Call, Callable[..., tuple[object, ...]]]]

CALLS: Calls = {
    Entry: (calls.VALIDATE_ENTRY, swipe_arguments),
    Exit: (calls.PROCESS_EXIT, swipe_arguments),
    Recharge: (calls.RECHARGE_CARD, lambda e: (e.card_id, e.amount, e.station_id, e.ts)),
    TrainMove: (calls.RECORD_TRAIN_EVENT, lambda e: (e.train_id, e.station_id, e.activity, e.ts)),
    Payment: (calls.EVALUATE_TRANSACTION,
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

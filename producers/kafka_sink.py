"""A sink that publishes events to the bridge's inbound topics instead of calling the functions.

Values are what the bridge accepts (bridge/messages.py): VoltDB's CSV lines or JSON
objects, timestamps in ISO 8601 with their offset, payment amounts as exact decimals.
An event's outcome is Kafka's acknowledgement (acks=all): `accepted` means the broker
has the message; the decision is made later, when the bridge applies it. Messages are
keyed by train, card or account, so one key's events stay in order in one partition.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError

from metro.errors import MetroError
from metro.kafka_clients import absent_topic
from metro.kafka_settings import new_client
from metro.topics import PAYMENT_TOPIC, RECHARGE_TOPIC, TRAIN_TOPIC

from .events import Done, Event, Outcome, Payment, Recharge, TrainMove

FORMATS = ("csv", "json")
CLOSE_TIMEOUT_SECONDS = 10.0
MAX_BLOCK_MS = 5000


def _csv(*fields: object) -> str:
    return ",".join(str(field) for field in fields)


def _json(**fields: object) -> str:
    # Amounts are written from their decimal text: a JSON number, never a float.
    return "{" + ", ".join(f"{json.dumps(name)}: {value}" for name, value in fields.items()) + "}"


def encode_train_move(e: TrainMove, fmt: str) -> str:
    ts = e.ts.isoformat()
    if fmt == "csv":
        return _csv(e.train_id, e.station_id, e.activity, ts)
    return _json(train_id=e.train_id, station_id=e.station_id, activity_type=e.activity,
                 ts=json.dumps(ts))


def encode_recharge(e: Recharge, fmt: str) -> str:
    ts = e.ts.isoformat()
    if fmt == "csv":
        return _csv(e.card_id, e.amount, e.station_id, ts)
    return _json(card_id=e.card_id, amount=e.amount, station_id=e.station_id, ts=json.dumps(ts))


def encode_payment(e: Payment, fmt: str) -> str:
    ts = e.ts.isoformat()
    if fmt == "csv":
        return _csv(e.transaction_id, e.account_id, e.amount, ts)
    return _json(transaction_id=json.dumps(e.transaction_id), account_id=e.account_id,
                 amount=e.amount, timestamp=json.dumps(ts))


# Which topic each kind of event goes to and how its value is written.
ENCODERS: dict[type[Event], tuple[str, Callable[[Any, str], str]]] = {
    TrainMove: (TRAIN_TOPIC, encode_train_move),
    Recharge: (RECHARGE_TOPIC, encode_recharge),
    Payment: (PAYMENT_TOPIC, encode_payment),
}


class KafkaSink:
    """Publishes each event as one message; at most max_in_flight unacknowledged."""

    def __init__(self, bootstrap: str, *, fmt: str = "csv", max_in_flight: int = 10_000) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        self.bootstrap = bootstrap
        self.fmt = fmt
        self.max_in_flight = max_in_flight
        self.producer: KafkaProducer | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._in_flight = 0
        self._known_topics: set[str] = set()

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        try:
            self.producer = await self.loop.run_in_executor(None, self._new_producer)
        except KafkaError as error:
            raise MetroError(f"cannot reach Kafka at {self.bootstrap}: "
                             f"{str(error).strip() or type(error).__name__}") from None

    def _new_producer(self) -> KafkaProducer:
        return new_client(KafkaProducer, self.bootstrap, acks="all",
                          enable_idempotence=True, linger_ms=5, max_block_ms=MAX_BLOCK_MS,
                          bootstrap_timeout_ms=5000, client_id="metro-producers")

    def submit(self, event: Event, done: Done) -> None:
        assert self.producer is not None and self.loop is not None
        topic, encode = ENCODERS[type(event)]
        loop = self.loop

        def finish(outcome: Outcome) -> None:
            # Kafka calls back on its own thread; outcomes are counted on the loop's.
            loop.call_soon_threadsafe(self._finish, done, event, outcome, time.monotonic())

        if topic not in self._known_topics:
            self._know(topic)
        self._in_flight += 1
        try:
            future = self.producer.send(topic, key=str(event.key).encode(),
                                        value=encode(event, self.fmt).encode())
        except KafkaError as error:
            self._finish(done, event, Outcome.error(_kafka_error(error)), time.monotonic())
            return
        future.add_callback(lambda _: finish(Outcome.of_decision(True, f"published to {topic}")))
        future.add_errback(lambda error: finish(Outcome.error(_kafka_error(error))))

    def _know(self, topic: str) -> None:
        """Wait for the topic's metadata once (a broker that creates topics makes it then);
        without it, every send would wait max_block_ms and fail: the run stops instead."""
        assert self.producer is not None
        try:
            self.producer.partitions_for(topic)
        except KafkaTimeoutError:
            raise MetroError(absent_topic(self.bootstrap, topic)
                             or f"Kafka at {self.bootstrap} gave no metadata for topic "
                                f"{topic!r} in {MAX_BLOCK_MS / 1000:.0f} s") from None
        self._known_topics.add(topic)

    def _finish(self, done: Done, event: Event, outcome: Outcome, finished: float) -> None:
        self._in_flight -= 1
        done(event, outcome, finished)

    def flush(self) -> None:
        """Nothing to push: the producer sends its batches after linger_ms by itself."""

    def in_flight(self) -> int:
        return self._in_flight

    def has_room(self) -> bool:
        return self._in_flight < self.max_in_flight

    async def close(self) -> None:
        """Wait for the acknowledgements still due (up to CLOSE_TIMEOUT_SECONDS), then close;
        messages Kafka did not acknowledge by then count as errors."""
        producer, self.producer = self.producer, None
        if producer is not None and self.loop is not None:
            await self.loop.run_in_executor(None, producer.close, CLOSE_TIMEOUT_SECONDS)
            await asyncio.sleep(0)  # outcomes called back during close


def _kafka_error(error: BaseException) -> str:
    return f"Kafka: {str(error).strip() or type(error).__name__}"

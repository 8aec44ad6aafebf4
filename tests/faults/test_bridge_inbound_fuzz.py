"""Whatever the bytes, the parser answers with a message or an InvalidMessage, nothing else;
and through a real bridge a burst of garbage is dead-lettered, each with the parser's reason,
while the good messages after it are applied."""

from __future__ import annotations

import json
import random
import re
from datetime import datetime
from decimal import Decimal

from factories import add_card, at, balance
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka_fixtures import skip_inbound_backlog, wait_until

from metro.bridge.messages import (
    EARLIEST,
    LATEST,
    InvalidMessage,
    Payment,
    Recharge,
    TrainEvent,
    parse_message,
    reason_text,
)
from metro.topics import INBOUND_TOPICS, PAYMENT_TOPIC, RECHARGE_TOPIC, TRAIN_TOPIC

VALID = {
    TRAIN_TOPIC: [b"1,3,0,2026-11-02T08:00:00Z", b" 5,6,1,2026-11-30 07:55:00.366832",
                  b"2,4,1,1793606400250000", b"2,4,1,1793606400250", b"2,4,1,1793606400.25",
                  b'{"train_id": 1, "station_id": 3, "activity_type": 1,'
                  b' "ts": "2026-11-02T08:00:00+01:00"}',
                  b'{"train_id": "1", "station_id": 3, "activity_type": 0,'
                  b' "timestamp": 1793606400.123456}'],
    RECHARGE_TOPIC: [b"42,2000,3", b"42,2000,3,2026-11-02T08:05:00Z", b"42,2000,3,",
                     b'{"card_id": 42, "amount": 2000, "station_id": 4}',
                     b'{"card_id": 9000000000, "amount": 1, "station_id": 4,'
                     b' "ts": 1793606400}'],
    PAYMENT_TOPIC: [b'{"transaction_id": "tx1001", "account_id": "account123",'
                    b' "amount": 12000.0, "timestamp": 1735862698.123}',
                    b'{"transaction_id": 7, "account_id": 7, "amount": "0.10"}',
                    b"p-1,7,5000.01,2026-11-02T08:00:00Z", b"p-2,account123,1e4"],
}
# Bytes that have broken parsers: digits of other scripts, separators, quotes, escapes.
TROUBLE = [b"\xc2\xb2", b"\xd9\xa3", b"\x00", b"\n", b"\r", b'"', b",", b"{", b"[", b"]", b"}",
           b"\\", b"\\u0000", b"\\ud800", b"-", b"+", b".", b"e", b"E", b"_", b"9" * 5000,
           b"1e999999999", b"NaN", b"Infinity", b"-Infinity", b"null", b"true", b"[" * 3000,
           b"\xff", b"\xed\xa0\x80", b" ", b"0", b"-5", b"1e30", b"0001-01-01", b"9999-12-31",
           b"\xef\xbb\xbf", b"\t"]


def mutate(rng: random.Random, value: bytes) -> bytes:
    """A near-valid variation of value: a few insertions, deletions, replacements, cuts."""
    data = bytearray(value)
    for _ in range(rng.randint(1, 4)):
        where = rng.randint(0, len(data))
        action = rng.randrange(5)
        if action == 0:
            data[where:where] = rng.choice(TROUBLE)
        elif action == 1 and data:
            del data[where:where + rng.randint(1, 8)]
        elif action == 2 and data:
            data[min(where, len(data) - 1)] = rng.randrange(256)
        elif action == 3:
            del data[where:]
        else:
            data[where:where] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 6)))
    return bytes(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats()
    | st.integers(-10**30, 10**30).map(lambda n: f"{n}") | st.text(max_size=20)
    | st.sampled_from(["2026-11-02T08:00:00Z", "1735862698.123", "", " ", "\x00", "\ud800"]),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6)

FIELDS = {TRAIN_TOPIC: ["train_id", "station_id", "activity_type", "ts", "timestamp"],
          RECHARGE_TOPIC: ["card_id", "amount", "station_id", "ts", "timestamp"],
          PAYMENT_TOPIC: ["transaction_id", "account_id", "amount", "ts", "timestamp"]}


@st.composite
def json_objects(draw: st.DrawFn, topic: str) -> bytes:
    """JSON objects with the topic's field names (some missing) and any JSON values."""
    names = draw(st.lists(st.sampled_from(FIELDS[topic]), unique=True))
    obj = {name: draw(json_values) for name in names}
    return json.dumps(obj, allow_nan=True).encode("utf-8", "surrogatepass")


field_values = st.one_of(
    json_values, st.integers(-2**64, 2**64), st.decimals(allow_nan=True),
    st.sampled_from([946684800, 7258118400, 1735862698123, 1735862698123456, 10**10, 0, -5,
                     "1735862698.123", "2026-11-30 07:55:00.366832", "0001-01-01",
                     "infinity", "nan", "\u00b2", "1_000", "\u0663"]))


@st.composite
def near_valid_json(draw: st.DrawFn, topic: str) -> bytes:
    """A valid JSON sample of the topic with one or two fields replaced or dropped."""
    base = json.loads(draw(st.sampled_from([v for v in VALID[topic] if v.startswith(b"{")])))
    for _ in range(draw(st.integers(1, 2))):
        name = draw(st.sampled_from(FIELDS[topic]))
        if draw(st.booleans()):
            base.pop(name, None)
        else:
            value = draw(field_values)
            if isinstance(value, Decimal):  # as a JSON string or as a JSON number's text
                value = str(value) if draw(st.booleans()) else f"@number:{value}@"
            base[name] = value
    text = json.dumps(base, allow_nan=True)
    text = re.sub(r'"@number:([^@]*)@"', r"\1", text)
    return text.encode("utf-8", "surrogatepass")


@st.composite
def near_valid_csv(draw: st.DrawFn, topic: str) -> bytes:
    """A valid CSV sample of the topic with one or two fields replaced by awkward text."""
    fields = draw(st.sampled_from([v for v in VALID[topic] if not v.startswith(b"{")])
                  ).split(b",")
    for _ in range(draw(st.integers(1, 2))):
        where = draw(st.integers(0, len(fields) - 1))
        fields[where] = draw(st.sampled_from(TROUBLE) | st.binary(max_size=8)
                             | field_values.map(lambda v: str(v).encode("utf-8",
                                                                         "surrogatepass")))
    return b",".join(fields)


def values(topic: str) -> st.SearchStrategy[bytes]:
    return st.one_of(
        near_valid_json(topic),
        near_valid_csv(topic),
        st.binary(max_size=120),
        st.randoms(use_true_random=False).flatmap(
            lambda rng: st.sampled_from(VALID[topic]).map(lambda v: mutate(rng, v))),
        json_objects(topic),
        st.lists(st.sampled_from(TROUBLE + [b"1", b"42", b"2026-11-02T08:00:00Z"]),
                 max_size=6).map(b",".join),
    )


def check(topic: str, value: bytes, record_ms: int | None) -> None:
    """parse_message returns a well-formed message or raises InvalidMessage, nothing else."""
    try:
        message = parse_message(topic, value, record_ms)
    except InvalidMessage as error:
        reason = str(error)
        assert reason and reason_text(reason) == reason
        return
    assert isinstance(message, {TRAIN_TOPIC: TrainEvent, RECHARGE_TOPIC: Recharge,
                                PAYMENT_TOPIC: Payment}[topic])
    if message.ts is not None or topic == TRAIN_TOPIC:
        assert isinstance(message.ts, datetime)
        assert EARLIEST <= message.ts < LATEST
    if isinstance(message, Payment):
        for text in (message.transaction_id, message.account_id):
            assert isinstance(text, str) and "\x00" not in text
            text.encode("utf-8")
        assert isinstance(message.amount, Decimal) and message.amount.is_finite()
    else:
        for name, number in vars(message).items():
            if name != "ts":
                assert type(number) is int and -2**63 <= number < 2**63


record_times = st.one_of(st.none(), st.just(-1), st.integers(-2**63, 2**63 - 1),
                         st.integers(946684800000, 7258118400000))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_nothing_but_invalid_message_escapes_the_parser(data):
    topic = data.draw(st.sampled_from(INBOUND_TOPICS))
    check(topic, data.draw(values(topic)), data.draw(record_times))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(INBOUND_TOPICS), st.randoms(use_true_random=False))
def test_mutations_of_valid_messages(topic, rng):
    for value in VALID[topic]:
        check(topic, mutate(rng, value), 1764547200000)


def test_the_valid_samples_parse():
    for topic, samples in VALID.items():
        for value in samples:
            parse_message(topic, value, 1764547200000)


def garbage(rng: random.Random, count: int) -> list[tuple[str, bytes, str]]:
    """count values the parser refuses, spread over the topics, with the parser's reason."""
    found: list[tuple[str, bytes, str]] = []
    while len(found) < count:
        topic = rng.choice(INBOUND_TOPICS)
        if rng.random() < 0.3:
            value = bytes(rng.randrange(256) for _ in range(rng.randint(0, 40)))
        else:
            value = mutate(rng, rng.choice(VALID[topic]))
        try:
            parse_message(topic, value, 1764547200000)
        except InvalidMessage as error:
            found.append((topic, value, reason_text(str(error))))
    return found


def test_a_burst_of_garbage_is_dead_lettered_and_good_messages_still_apply(
        db, conn, stations, kafka, payment_topic, kafka_producer, start_bridge):
    add_card(conn, 42, balance=0, notify=0)
    skip_inbound_backlog(db, kafka)
    bridge = start_bridge(db)
    bridge.wait_for_output("consuming TRAINTOPIC, RECHARGE, transaction_topic")
    burst = garbage(random.Random(20261130), 300)
    sent = [kafka_producer.send(topic, value, key=b"g") for topic, value, _ in burst]
    meta = [future.get(timeout=20) for future in sent]
    good = [kafka_producer.send(TRAIN_TOPIC, b"1,3,0,2026-11-02T08:00:00Z"),
            kafka_producer.send(RECHARGE_TOPIC, b"42,2000,3,2026-11-02T08:05:00Z", key=b"g"),
            kafka_producer.send(PAYMENT_TOPIC, b"f-1,7,12.50,2026-11-02T08:00:00Z", key=b"g")]
    [future.get(timeout=20) for future in good]
    wait_until(lambda: conn.execute("SELECT sum(applied + dead_lettered)"
                                    " FROM metro.bridge_inbound_offsets").fetchone()[0]
               == len(burst) + len(good), 60, "the burst and the good messages")
    assert bridge.terminate() == 0
    assert "Traceback" not in bridge.output()

    dead = conn.execute("SELECT topic, kafka_partition, kafka_offset, value, reason"
                        " FROM metro.bridge_dead_letters").fetchall()
    assert sorted(dead) == sorted(
        (topic, m.partition, m.offset, value, reason)
        for (topic, value, reason), m in zip(burst, meta, strict=True))
    assert conn.execute("SELECT sum(applied), sum(dead_lettered)"
                        " FROM metro.bridge_inbound_offsets").fetchone() == (3, len(burst))
    assert balance(conn, 42) == 2000
    assert conn.execute("SELECT train_id, station_id, activity_type, ts FROM metro.train_events"
                        ).fetchall() == [(1, 3, 0, at(0))]
    assert conn.execute("SELECT transaction_id, amount FROM metro.risk_decisions").fetchall() \
        == [("f-1", Decimal("12.50"))]

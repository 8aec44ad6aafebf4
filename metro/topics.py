"""Kafka topic names: which topic feeds which function (DESIGN.md), and the position header."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg


@dataclass(frozen=True)
class Stream:
    table: str
    topic: str


def streams(conn: psycopg.Connection) -> list[Stream]:
    """The outbound streams and their topics, as the database registers them
    (metro.streams: register_stream() in the stream's own SQL file)."""
    return [Stream(table, topic) for table, topic in conn.execute(
        "SELECT stream, topic FROM metro.streams ORDER BY stream").fetchall()]


# Kafka header carrying the row's stream position (decimal ASCII), for de-duplication.
POSITION_HEADER = "position"

TRAIN_TOPIC = "TRAINTOPIC"
RECHARGE_TOPIC = "RECHARGE"
PAYMENT_TOPIC = "transaction_topic"
INBOUND_TOPICS = (TRAIN_TOPIC, RECHARGE_TOPIC, PAYMENT_TOPIC)

# The Kafka consumer group the bridge mirrors its inbound offsets to (for monitoring:
# PostgreSQL's stored offsets are the truth).
BRIDGE_GROUP = "metro-bridge"

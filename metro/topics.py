"""Kafka topic names: which topic feeds which function (DESIGN.md), and the position header."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stream:
    table: str
    topic: str


STREAMS = (
    Stream("fraud", "FRAUD"),
    Stream("card_alert_export", "CARD_ALERT_EXPORT"),
    Stream("trips", "TRIPS"),
    Stream("transaction_decisions", "transaction_decisions"),
)

# Kafka header carrying the row's stream position (decimal ASCII), for de-duplication.
POSITION_HEADER = "position"

TRAIN_TOPIC = "TRAINTOPIC"
RECHARGE_TOPIC = "RECHARGE"
PAYMENT_TOPIC = "transaction_topic"
INBOUND_TOPICS = (TRAIN_TOPIC, RECHARGE_TOPIC, PAYMENT_TOPIC)

# The Kafka consumer group the bridge mirrors its inbound offsets to (for monitoring:
# PostgreSQL's stored offsets are the truth).
BRIDGE_GROUP = "metro-bridge"

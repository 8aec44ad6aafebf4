"""Connections to Kafka for the tools that read it (metro topics, the dashboard's metrics):
a reachability probe, a consumer that commits nothing, an admin client, the cluster's
topics, end offsets, and quiet logging; and, for the clients that write (the bridge, the
producers), what to tell when a topic they wait for does not exist."""

from __future__ import annotations

import logging
import socket
from typing import Any

from metro import kafka_settings
from metro.errors import MetroError

CONNECT_TIMEOUT = 3.0
REQUEST_TIMEOUT_MS = 10_000


class KafkaNotAnswering(MetroError):
    """No broker of the bootstrap list accepted a connection or answered."""


def _servers(bootstrap: str) -> list[tuple[str, int]]:
    servers = []
    for item in bootstrap.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise MetroError(f"not a Kafka address (HOST:PORT): {item.strip()!r}")
        servers.append((host.strip("[]"), int(port)))
    return servers


def reachable(bootstrap: str, timeout: float = CONNECT_TIMEOUT) -> bool:
    """Whether some broker of the list accepts a TCP connection.

    Probed before any Kafka client is made: kafka-python retries a refused
    connection on its own for a long time and leaks a socket per attempt.
    """
    for host, port in _servers(bootstrap):
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return True
        except OSError:
            continue
    return False


def quiet_kafka_logging() -> None:
    """kafka-python logs every reconnection; the commands report failures in one line."""
    logger = logging.getLogger("kafka")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False


def _client(factory: Any, bootstrap: str, **options: Any) -> Any:
    """factory's client of bootstrap, or KafkaNotAnswering."""
    from kafka.errors import KafkaError

    kafka_settings.settings()  # a bad METRO_KAFKA_CONFIG is told even when Kafka is down
    if not reachable(bootstrap):
        raise KafkaNotAnswering(f"Kafka broker at {bootstrap} is not answering")
    try:
        return kafka_settings.new_client(factory, bootstrap, request_timeout_ms=REQUEST_TIMEOUT_MS,
                                         bootstrap_timeout_ms=REQUEST_TIMEOUT_MS, **options)
    except KafkaError as error:
        raise KafkaNotAnswering(f"Kafka broker at {bootstrap} is not answering: "
                                f"{type(error).__name__}") from None


def consumer(bootstrap: str) -> Any:
    """A consumer without a group (it commits nothing), or KafkaNotAnswering."""
    from kafka import KafkaConsumer

    return _client(KafkaConsumer, bootstrap, group_id=None, enable_auto_commit=False,
                   session_timeout_ms=REQUEST_TIMEOUT_MS - 1000)


def admin(bootstrap: str) -> Any:
    """An admin client (topics, consumer groups), or KafkaNotAnswering."""
    from kafka import KafkaAdminClient

    return _client(KafkaAdminClient, bootstrap)


def user_topics(client: Any) -> list[str]:
    """Topics of the cluster without Kafka's internal ones (__consumer_offsets ...)."""
    return sorted(t for t in client.topics() if not t.startswith("__"))


def absent_topic(bootstrap: str, topic: str) -> str | None:
    """What to tell when a client waited in vain for topic's metadata and the cluster
    answers without it (a broker that does not create topics by itself); None when the
    topic exists or the cluster does not answer (an outage, reported as such)."""
    from kafka.errors import KafkaError

    try:
        client = consumer(bootstrap)
    except MetroError:
        return None
    try:
        # The list of every topic: asking for this one alone could create it.
        if topic in client.topics():
            return None
    except KafkaError:
        return None
    finally:
        client.close()
    return (f"topic {topic!r} does not exist on Kafka at {bootstrap} and the broker did not"
            " create it: create it (`metro topics create`, or the cluster's tools), or let the"
            " broker create topics (auto.create.topics.enable=true)")


def end_offsets(client: Any, pairs: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """End offset of each (topic, partition)."""
    from kafka import TopicPartition

    ends = client.end_offsets([TopicPartition(topic, p) for topic, p in pairs])
    return {(tp.topic, tp.partition): int(offset) for tp, offset in ends.items()}

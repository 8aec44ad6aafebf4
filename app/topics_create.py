"""`metro topics create`: make the topics a bridge of this database needs, for a cluster
that does not create topics by itself.

The topics are the database's streams' (metro.streams) and the inbound ones. Those the
cluster lacks are created with --partitions and --replication-factor, else
METRO_KAFKA_CONFIG's topic.partitions and topic.replication.factor, else the broker's
defaults (num.partitions, default.replication.factor); existing topics are left as they
are. One line per topic; exit 2 when one could not be created.
"""

from __future__ import annotations

from typing import Any

from metro import database, schema
from metro.errors import MetroError
from metro.kafka_clients import admin
from metro.kafka_settings import settings
from metro.topics import INBOUND_TOPICS, streams

BROKER_DEFAULT = -1  # CreateTopics: the broker's num.partitions or default.replication.factor


def needed_topics(dsn: str) -> list[str]:
    """The topics a bridge of this database writes (its streams') and reads (inbound)."""
    with database.connect(dsn) as conn:
        schema.require_current(conn)
        return [stream.topic for stream in streams(conn)] + list(INBOUND_TOPICS)


def create_missing(bootstrap: str, names: list[str], partitions: int,
                   replication_factor: int) -> tuple[list[str], int]:
    """Create the topics of names the cluster lacks: a line per topic, and how many failed."""
    client = admin(bootstrap)
    try:
        existing = set(client.list_topics())
        answers = create(client, [name for name in names if name not in existing],
                         partitions, replication_factor)
    finally:
        client.close()
    return outcome_lines(names, answers)


def create(client: Any, names: list[str], partitions: int,
           replication_factor: int) -> list[dict[str, Any]]:
    """The broker's answer per topic asked for (none asked: no request)."""
    if not names:
        return []
    return list(client.create_topics(
        {name: {"num_partitions": partitions, "replication_factor": replication_factor}
         for name in names}, raise_errors=False)["topics"])


def outcome_lines(names: list[str], answers: list[dict[str, Any]]) -> tuple[list[str], int]:
    """A line per topic of names from the broker's answers, and how many were refused."""
    from kafka.errors import TopicAlreadyExistsError, for_code

    by_name = {answer["name"]: answer for answer in answers}
    lines, failed = [], 0
    for name in names:
        answer = by_name.get(name)
        # Listed as missing, then created by someone else before our request: it exists.
        if answer is None or for_code(answer["error_code"]) is TopicAlreadyExistsError:
            lines.append(f"{name}: exists")
        elif answer["error_code"] == 0:
            lines.append(f"{name}: created, {answer['num_partitions']} partition(s), "
                         f"replication factor {answer['replication_factor']}")
        else:
            failed += 1
            lines.append(f"{name}: not created: "
                         f"{answer['error_message'] or for_code(answer['error_code']).__name__}")
    return lines, failed


def command(bootstrap: str, partitions: int | None, replication_factor: int | None) -> int:
    """Create what is missing, print a line per topic; MetroError when one was refused."""
    chosen = settings()
    partitions = partitions or chosen.topic_partitions or BROKER_DEFAULT
    replication = replication_factor or chosen.topic_replication_factor or BROKER_DEFAULT
    lines, failed = create_missing(bootstrap, needed_topics(database.conninfo()), partitions,
                                   replication)
    for line in lines:
        print(line, flush=True)
    if failed:
        raise MetroError(f"{failed} topic(s) not created on {bootstrap}")
    return 0

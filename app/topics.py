"""`metro topics list|tail|create`: what the Kafka topics hold, without Kafka's own tools
(`create`: app/topics_create.py).

`list` prints every topic's partitions with their end offsets and the lag of the
bridge's consumer group (`metro-bridge`: its committed offset, when it has one).
`tail TOPIC` prints messages as they arrive (or from the beginning): partition,
offset, key, the `position` header, the record's timestamp and the value as
pretty JSON. The broker is `--kafka HOST:PORT`, else METRO_KAFKA, else the
project's local broker (`metro kafka start`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from metro import config
from metro.errors import MetroError
from metro.kafka_clients import (
    admin,
    consumer,
    end_offsets,
    quiet_kafka_logging,
    user_topics,
)
from metro.service_cli import at_least
from metro.topics import BRIDGE_GROUP, POSITION_HEADER

from . import topics_create


class UnknownTopic(MetroError):
    """The broker has no such topic."""


def bootstrap_address(cli_value: str | None) -> str:
    """--kafka, else METRO_KAFKA, else the project's local broker."""
    return config.kafka_servers(cli_value)


@dataclass(frozen=True)
class PartitionInfo:
    topic: str
    partition: int
    end_offset: int
    committed: int | None          # the bridge group's committed offset
    lag: int | None                # end_offset - committed


def group_offsets(bootstrap: str, group: str) -> dict[tuple[str, int], int]:
    """Committed offsets of a consumer group (empty when the group never committed)."""
    from kafka.errors import KafkaError

    client = admin(bootstrap)
    try:
        offsets = client.list_group_offsets({group: None}).get(group, {})
    except KafkaError:
        return {}
    finally:
        client.close()
    return {(tp.topic, tp.partition): int(meta.offset) for tp, meta in offsets.items()
            if meta.offset is not None and meta.offset >= 0}


def describe(bootstrap: str) -> list[PartitionInfo]:
    client = consumer(bootstrap)
    try:
        pairs = [(topic, p) for topic in user_topics(client)
                 for p in sorted(client.partitions_for_topic(topic) or ())]
        ends = end_offsets(client, pairs) if pairs else {}
    finally:
        client.close()
    committed = group_offsets(bootstrap, BRIDGE_GROUP)
    result = []
    for pair in pairs:
        done = committed.get(pair)
        result.append(PartitionInfo(pair[0], pair[1], ends[pair], done,
                                    None if done is None else max(0, ends[pair] - done)))
    return result


def render_list(partitions: list[PartitionInfo], bootstrap: str) -> str:
    if not partitions:
        return f"no topics on {bootstrap}"
    width = max(5, *(len(p.topic) for p in partitions))
    lines = [f"{'topic':<{width}} {'partition':>9} {'end offset':>11} "
             f"{BRIDGE_GROUP + ' offset':>20} {'lag':>8}"]
    for p in partitions:
        committed = "-" if p.committed is None else str(p.committed)
        lag = "-" if p.lag is None else str(p.lag)
        lines.append(f"{p.topic:<{width}} {p.partition:>9} {p.end_offset:>11} "
                     f"{committed:>20} {lag:>8}")
    return "\n".join(lines)


def _header(record: Any, name: str) -> str | None:
    for key, value in record.headers or ():
        if key == name:
            return value.decode("utf-8", "replace") if value is not None else None
    return None


def format_record(record: Any) -> str:
    """One message: where it is, key, position header, timestamp, then the value."""
    key = record.key.decode("utf-8", "replace") if record.key is not None else "-"
    position = _header(record, POSITION_HEADER) or "-"
    stamp = datetime.fromtimestamp(record.timestamp / 1000, UTC).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")
    head = (f"{record.topic}[{record.partition}] offset {record.offset}  key {key}  "
            f"position {position}  {stamp}")
    if record.value is None:
        return f"{head}\n(null)"
    text = record.value.decode("utf-8", "replace")
    try:
        body = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        body = text
    return f"{head}\n{body}"


def records(bootstrap: str, topic: str, from_beginning: bool,
            started: Callable[[str], None] | None = None) -> Iterator[Any]:
    """The topic's records, from its beginning or from now on, until the caller stops;
    started is told where reading starts once the positions are resolved."""
    from kafka import TopicPartition

    client = consumer(bootstrap)
    try:
        known = user_topics(client)
        if topic not in known:
            raise UnknownTopic(f"unknown topic {topic!r} on {bootstrap} (topics: "
                               f"{', '.join(known) or 'none'})")
        partitions = [TopicPartition(topic, p)
                      for p in sorted(client.partitions_for_topic(topic) or ())]
        client.assign(partitions)
        if from_beginning:
            client.seek_to_beginning(*partitions)
        else:
            client.seek_to_end(*partitions)
        # Resolve the positions now, before anything new arrives.
        offsets = ", ".join(f"partition {tp.partition} from offset {client.position(tp)}"
                            for tp in partitions)
        if started is not None:
            started(f"{topic}: reading {offsets}")
        while True:
            for batch in client.poll(timeout_ms=500).values():
                yield from batch
    finally:
        client.close()


def tail(bootstrap: str, topic: str, *, from_beginning: bool = False, key: str | None = None,
         limit: int | None = None, output: TextIO = sys.stdout) -> int:
    """Print the topic's messages (those with key, when given); stop after limit of them."""
    shown = 0
    if limit == 0:
        return 0
    def started(where: str) -> None:
        # On stderr, so that stdout holds only messages.
        follow = f"stops after {limit}" if limit is not None else "Ctrl-C stops"
        print(f"{where}; waiting for messages ({follow})", file=sys.stderr, flush=True)

    for record in records(bootstrap, topic, from_beginning, started):
        if key is not None and (record.key is None or record.key.decode("utf-8", "replace") != key):
            continue
        output.write(format_record(record) + "\n")
        output.flush()
        shown += 1
        if limit is not None and shown >= limit:
            break
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    topics = sub.add_parser("topics", help="list the Kafka topics with their offsets and the "
                                           "bridge's lag, print a topic's messages, or "
                                           "create the topics metro needs")
    actions = topics.add_subparsers(dest="topics_action", required=True)
    listing = actions.add_parser("list", help="topics, partitions, end offsets and the lag of "
                                              f"the consumer group {BRIDGE_GROUP}")
    tailing = actions.add_parser("tail", help="print a topic's messages as they arrive")
    tailing.add_argument("topic")
    tailing.add_argument("--from-beginning", action="store_true",
                         help="start at the oldest message instead of the end")
    tailing.add_argument("--key", help="only messages with this key")
    tailing.add_argument("--limit", type=at_least(0), metavar="N",
                         help="stop after N messages (default: follow until Ctrl-C)")
    creating = actions.add_parser("create", help="create the topics a bridge of this database "
                                                 "needs that the cluster lacks")
    creating.add_argument("--partitions", type=at_least(1), metavar="N",
                          help="partitions of each topic created (default: topic.partitions "
                               "of METRO_KAFKA_CONFIG, else the broker's num.partitions)")
    creating.add_argument("--replication-factor", type=at_least(1), metavar="N",
                          help="replicas of each topic created (default: "
                               "topic.replication.factor of METRO_KAFKA_CONFIG, else the "
                               "broker's default.replication.factor)")
    for parser in (listing, tailing, creating):
        parser.add_argument("--kafka", metavar="HOST:PORT",
                            help="bootstrap servers (default METRO_KAFKA, else the broker of "
                                 "`metro kafka start`)")
    topics.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    quiet_kafka_logging()
    bootstrap = bootstrap_address(args.kafka)
    if args.topics_action == "list":
        print(render_list(describe(bootstrap), bootstrap))
        return 0
    if args.topics_action == "create":
        return topics_create.command(bootstrap, args.partitions, args.replication_factor)
    return tail(bootstrap, args.topic, from_beginning=args.from_beginning, key=args.key,
                limit=args.limit)

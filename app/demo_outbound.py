"""Where the demo's bridge sends the stream rows: a Kafka broker when there is one,
otherwise a JSON-lines file (metro.bridge.jsonlines).

- `--kafka HOST:PORT` or METRO_KAFKA: that broker, which must answer;
- else the project's broker (`metro kafka`) under METRO_HOME: reused when it runs,
  started when Java 17 is there (it is left running for the next run);
- else METRO_HOME/demo/streams.jsonl, and the reason is said.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from metro import config
from metro.errors import MetroError

from . import kafka_broker


@dataclass(frozen=True)
class Outbound:
    kafka: str | None = None          # bootstrap servers, or None for the file
    file: Path | None = None
    broker_started: bool = False      # the project's broker was started by this run
    local_broker: bool = False        # the project's broker, left running

    def describe(self) -> str:
        return f"Kafka at {self.kafka}" if self.kafka else f"the JSON-lines file {self.file}"


def jsonlines_path() -> Path:
    return config.metro_home() / "demo" / "streams.jsonl"


def answers(bootstrap: str) -> bool:
    """Whether any of the comma-separated host:port addresses accepts a TCP connection."""
    for address in bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            with socket.create_connection((host or "localhost", int(port)), timeout=3):
                return True
        except (OSError, ValueError):
            continue
    return False


def choose(cli_kafka: str | None, say: Callable[[str], None]) -> Outbound:
    selected = config.kafka_bootstrap(cli_kafka)
    if selected:
        if not answers(selected):
            raise MetroError(f"Kafka at {selected} does not answer (--kafka or METRO_KAFKA); "
                             "start it, or unset METRO_KAFKA to use the project's broker")
        say(f"Kafka: the broker at {selected}")
        return Outbound(kafka=selected)
    broker = kafka_broker.local_broker()
    if broker.running():
        broker.wait_ready(kafka_broker.START_TIMEOUT)
        say(f"Kafka: reusing the project's broker at {broker.bootstrap}")
        return Outbound(kafka=broker.bootstrap, local_broker=True)
    try:
        kafka_broker.java_executable()
        say("Kafka: starting the project's broker"
            + ("" if (kafka_broker.cache_dir() / "libs" / ".complete").exists()
               else " (fetching it from Maven Central with mvn, once)") + " ...")
        broker.start()
    except kafka_broker.KafkaUnavailable as error:
        path = jsonlines_path()
        say(f"Kafka: not available ({error})")
        say(f"Kafka: stream rows go to the JSON-lines file {path} instead "
            "(one line per row: topic, key, position, value)")
        return Outbound(file=path)
    say(f"Kafka: broker {kafka_broker.KAFKA_VERSION} running at {broker.bootstrap} "
        f"(data {broker.state_dir})")
    return Outbound(kafka=broker.bootstrap, broker_started=True, local_broker=True)

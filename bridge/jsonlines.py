"""Outbound without Kafka: stream rows appended to a JSON-lines file.

`JsonLinesTarget` stands in for the Kafka producer of bridge.outbound.Forwarder
(send, partitions_for, flush, close), so the cursor works exactly as with Kafka:
`flush` writes the batch and fsyncs the file, and only then does the forwarder
acknowledge the rows in PostgreSQL. A crash between the two writes the batch
again on the next start: at least once, every line carrying its stream position
so a reader can drop duplicates. A write error is raised from `flush`; the
bridge reports it and retries from the cursor.

One line per row, in the forwarder's order (per stream, commit order):
`{"topic": "FRAUD", "key": "42_1795420800700000", "position": 17, "value": {...}}`
where value is the Kafka message's JSON object.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from metro.topics import POSITION_HEADER


class Written:
    """What `send` returns, in place of a Kafka future: failures surface in `flush`."""

    exception: BaseException | None = None

    def failed(self) -> bool:
        return False


class JsonLinesTarget:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self._lines: list[str] = []

    def partitions_for(self, topic: str) -> set[int]:
        return {0}

    def send(self, topic: str, *, key: bytes, value: bytes, partition: int | None = None,
             headers: Sequence[tuple[str, bytes]] = ()) -> Written:
        position = int(dict(headers)[POSITION_HEADER])
        self._lines.append(json.dumps({"topic": topic, "key": key.decode(), "position": position,
                                       "value": json.loads(value)}) + "\n")
        return Written()

    def flush(self, timeout: float | None = None) -> None:
        """Write what was sent and make it durable."""
        if not self._lines:
            return
        self._file.writelines(self._lines)
        self._file.flush()
        os.fsync(self._file.fileno())
        self._lines.clear()

    def close(self, timeout: float | None = None) -> None:
        self._file.close()

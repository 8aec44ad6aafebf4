"""A bridge in a thread of the test, forwarding the streams to a JSON-lines file (no Kafka)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from metro.bridge.runner import Bridge, BridgeOptions


class FileBridge:
    """A bridge forwarding to path; what it says is kept in messages."""

    def __init__(self, dsn: str, path: Path, **options: Any) -> None:
        self.messages: list[str] = []
        self.stop = threading.Event()
        options = BridgeOptions(dsn=dsn, kafka="", poll_interval=0.2, outbound_file=path,
                                **options)
        self.thread = threading.Thread(
            target=Bridge(options, self.stop, self.messages.append).run)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        assert not self.thread.is_alive()


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

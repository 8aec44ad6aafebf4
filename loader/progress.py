"""A progress bar on a terminal, for files large enough to wait for; silent otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO

# Smaller files load in well under a second: no bar.
MIN_BYTES = 4 << 20
_WIDTH = 30
_INTERVAL = 0.2


class Progress:
    def __init__(self, name: str, total_bytes: int, stream: TextIO = sys.stderr) -> None:
        self.name = name
        self.total = max(total_bytes, 1)
        self.stream = stream
        self.enabled = stream.isatty() and total_bytes >= MIN_BYTES
        self.started = time.monotonic()
        self.shown = 0.0

    def update(self, done_bytes: int, rows: int) -> None:
        now = time.monotonic()
        if not self.enabled or now - self.shown < _INTERVAL:
            return
        self.shown = now
        fraction = min(done_bytes / self.total, 1.0)
        filled = int(fraction * _WIDTH)
        rate = rows / max(now - self.started, 1e-9)
        self.stream.write(f"\r{self.name} [{'#' * filled}{'.' * (_WIDTH - filled)}] "
                          f"{fraction:4.0%} {rows:,} rows {rate:,.0f} rows/s ")
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled and self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()

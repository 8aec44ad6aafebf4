"""Ctrl-C and SIGTERM as a threading.Event that a long-running command waits on.

The event is never set by the signal handler itself. Python runs a handler in the main
thread between two bytecodes, possibly inside that very event's wait() while it holds the
event's lock; Event.set() there would wait for that lock forever, and the command would
hang on SIGTERM (seen: 13 stops in 20 hung for a loop of stop.wait(0)). The handler only
counts and writes a byte to a pipe; a relay thread sets the event."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """`event` is set at the first Ctrl-C or SIGTERM; `count` says how many came (a
    command may take a second one as "hurry")."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.count = 0

    @contextlib.contextmanager
    def installed(self) -> Iterator[threading.Event]:
        """Handle Ctrl-C and SIGTERM inside the block (main thread only); the handlers
        in place before come back after it."""
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)

        def handle(signum: int, frame: FrameType | None) -> None:
            self.count += 1
            # A full pipe already holds a wake-up the relay has not read.
            with contextlib.suppress(BlockingIOError):
                os.write(write_end, b"\0")

        relay = threading.Thread(target=self._relay, args=(read_end,), daemon=True,
                                 name="metro-stop-signals")
        previous: dict[signal.Signals, Any] = {}
        try:
            for number in SIGNALS:  # ValueError outside the main thread, before anything runs
                previous[number] = signal.signal(number, handle)
            relay.start()
            yield self.event
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
            os.close(write_end)  # the relay reads the end of the pipe and returns
            if relay.is_alive():
                relay.join()
            os.close(read_end)

    def _relay(self, read_end: int) -> None:
        while os.read(read_end, 1):
            self.event.set()

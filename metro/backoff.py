"""How the long-running services (bridge, worker) wait before retrying after an outage."""

from __future__ import annotations

import time
from collections.abc import Callable


class Backoff:
    """The wait before the next attempt: 0.5 s after the first failure, doubling up to 5 s.
    An attempt that lasted longer than twice the longest wait was a recovery: the next
    outage starts again from 0.5 s, so a service that ran for an hour retries quickly."""

    FIRST, LONGEST = 0.5, 5.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._delay = self.FIRST
        self._started = clock()

    def attempt(self) -> None:
        """An attempt (a session, a connection) starts now."""
        self._started = self._clock()

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt, the current one having failed."""
        if self._clock() - self._started > 2 * self.LONGEST:
            self._delay = self.FIRST
        delay = self._delay
        self._delay = min(delay * 2, self.LONGEST)
        return delay

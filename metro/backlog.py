"""How `metro worker --status` and `metro bridge --status` count a backlog.

worker_lag() and bridge_lag() read at most count_limit + 1 pending rows. Counted
whole, the 1.3 billion events a worker stopped over a weekend leaves at 5,000 swipes/s
would take about two minutes (9 ms per 100,000), just when the operator asks; a million
takes about 0.1 s. The oldest pending row is exact whatever the limit.
"""

from __future__ import annotations

STATUS_COUNT_LIMIT = 1_000_000


def pending_text(pending: int, count_limit: int) -> str:
    """A pending count read with count_limit: beyond it, the limit and a plus sign."""
    return f"{count_limit:,}+" if pending > count_limit else f"{pending:,}"

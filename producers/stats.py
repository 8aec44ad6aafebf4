"""Live statistics of a run: outcome counts, send lag and latency percentiles.

Latency is measured from each call's scheduled send time to its result, so a
producer or database that falls behind shows up in the latency instead of
silently lowering the rate (no coordinated omission).

Latencies are kept in a histogram of integer microseconds: exact below 4,096 us,
above that rounded down to 12 significant bits (at most 0.05% low), so a long
run at a high rate needs a few thousand counters, not one number per call.
Percentiles use the nearest-rank definition: the p-th percentile is the smallest
recorded value with at least p% of the samples at or below it.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .events import Event, Outcome, Result

EXACT_BELOW_US = 4096
LATE_SECONDS = 0.050  # a call sent this much after its scheduled time counts as late
LATE_SHARE = 0.01     # more late calls than this and the producer fell behind
KEPT_SHARE = 0.97     # of the target rate, achieved, for the rate to count as kept
PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)


def bucket(microseconds: int) -> int:
    """The histogram bucket of a latency: its lower bound, in microseconds."""
    if microseconds < EXACT_BELOW_US:
        return max(microseconds, 0)
    shift = microseconds.bit_length() - 12
    return (microseconds >> shift) << shift


class LatencyHistogram:
    def __init__(self) -> None:
        self.counts: Counter[int] = Counter()
        self.samples = 0
        self.total_us = 0
        self.max_us = 0

    def record(self, microseconds: int) -> None:
        self.counts[bucket(microseconds)] += 1
        self.samples += 1
        self.total_us += microseconds
        if microseconds > self.max_us:
            self.max_us = microseconds

    def merge(self, other: LatencyHistogram) -> None:
        self.counts.update(other.counts)
        self.samples += other.samples
        self.total_us += other.total_us
        self.max_us = max(self.max_us, other.max_us)

    def percentile(self, p: float) -> int:
        """Nearest-rank percentile in microseconds (0 when there are no samples)."""
        if not 0 < p <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {p}")
        if not self.samples:
            return 0
        rank = max(1, math.ceil(p / 100 * self.samples))
        seen = 0
        for value in sorted(self.counts):
            seen += self.counts[value]
            if seen >= rank:
                return value
        return self.max_us  # not reached: the counts add up to samples

    def mean_us(self) -> float:
        return self.total_us / self.samples if self.samples else 0.0


@dataclass
class Window:
    """What happened in one display interval (or, merged, in the whole run)."""
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    results: Counter[Result] = field(default_factory=Counter)
    by_call: Counter[tuple[str, Result]] = field(default_factory=Counter)
    messages: Counter[str] = field(default_factory=Counter)
    targeted: int = 0     # completed events of the stream the target rate describes
    sent: int = 0
    late: int = 0
    max_lag: float = 0.0

    def merge(self, other: Window) -> None:
        self.latency.merge(other.latency)
        self.results.update(other.results)
        self.by_call.update(other.by_call)
        self.messages.update(other.messages)
        self.targeted += other.targeted
        self.sent += other.sent
        self.late += other.late
        self.max_lag = max(self.max_lag, other.max_lag)

    @property
    def completed(self) -> int:
        return self.latency.samples


def ms(microseconds: float) -> str:
    return f"{microseconds / 1000:.2f}"


def message_kind(message: str) -> str:
    """`Remaining Balance: 12.50` -> `Remaining Balance`: counts stay few."""
    return message.split(":", 1)[0][:80]


class Stats:
    def __init__(self, target_rate: float | None, target_label: str) -> None:
        self.target_rate = target_rate
        self.target_label = target_label
        self.window = Window()
        self.total = Window()
        self.unsent = 0

    def sent(self, lag: float) -> None:
        window = self.window
        window.sent += 1
        if lag > LATE_SECONDS:
            window.late += 1
        if lag > window.max_lag:
            window.max_lag = lag

    def completed(self, event: Event, outcome: Outcome, latency: float, targeted: bool) -> None:
        window = self.window
        window.latency.record(int(latency * 1_000_000))
        window.results[outcome.result] += 1
        window.by_call[(event.label, outcome.result)] += 1
        window.messages[message_kind(outcome.message)] += 1
        if targeted:
            window.targeted += 1

    def roll(self, seconds: float, elapsed: float) -> str:
        """The live line for the interval that just ended; starts the next one."""
        window, self.window = self.window, Window()
        self.total.merge(window)
        rate = window.completed / seconds if seconds > 0 else 0.0
        line = f"[{elapsed:7.1f}s] {rate:9.1f} calls/s"
        if self.target_rate is not None:
            line += (f" ({self.target_label} {window.targeted / seconds:.1f}/s,"
                     f" target {self.target_rate:g}/s)")
        line += (f"  p50 {ms(window.latency.percentile(50))} ms"
                 f"  p95 {ms(window.latency.percentile(95))} ms"
                 f"  p99 {ms(window.latency.percentile(99))} ms  ")
        line += "  ".join(f"{result.value} {window.results[result]}" for result in Result)
        if window.late:
            line += (f"\n           behind schedule: {window.late} of {window.sent} calls sent"
                     f" more than {LATE_SECONDS * 1000:.0f} ms late (up to"
                     f" {window.max_lag * 1000:.0f} ms): the offered rate is not kept")
        return line

    def summary(self, elapsed: float) -> dict[str, Any]:
        """The whole run, as written to --stats-file (call after the last roll)."""
        total = self.total
        histogram = total.latency
        targeted_rate = total.targeted / elapsed if elapsed > 0 else 0.0
        on_time = self.unsent == 0 and total.late <= LATE_SHARE * max(total.sent, 1)
        kept = on_time and (self.target_rate is None
                            or targeted_rate >= KEPT_SHARE * self.target_rate)
        calls: dict[str, dict[str, int]] = {}
        for (call, result), count in sorted(total.by_call.items(), key=lambda item: item[0][0]):
            calls.setdefault(call, {r.value: 0 for r in Result})[result.value] = count
        return {
            "elapsed_s": round(elapsed, 3),
            "calls": total.completed,
            "calls_per_s": round(total.completed / elapsed, 1) if elapsed > 0 else 0.0,
            "target": self.target_label,
            "target_rate": self.target_rate,
            "achieved_rate": round(targeted_rate, 1),
            "sent_on_time": on_time,
            "rate_kept": kept,
            "sent": total.sent,
            "late": total.late,
            "max_send_lag_ms": round(total.max_lag * 1000, 1),
            "unsent": self.unsent,
            "outcomes": {result.value: total.results[result] for result in Result},
            "by_call": calls,
            "messages": dict(total.messages.most_common()),
            "latency_ms": {
                **{f"p{p:g}": histogram.percentile(p) / 1000 for p in PERCENTILES},
                "max": histogram.max_us / 1000,
                "mean": round(histogram.mean_us() / 1000, 3),
            },
        }


def format_summary(name: str, summary: dict[str, Any]) -> str:
    """The final report: totals, outcomes per call, messages, and the percentile table."""
    lines = [f"{name}: {summary['calls']} calls in {summary['elapsed_s']:.1f} s"
             f" ({summary['calls_per_s']:.1f} calls/s)"]
    lateness = (f"{summary['late']} of {summary['sent']} calls sent more than"
                f" {LATE_SECONDS * 1000:.0f} ms late, max lag {summary['max_send_lag_ms']:.0f} ms,"
                f" {summary['unsent']} not sent")
    if summary["rate_kept"]:
        verdict = f"kept ({lateness})"
    elif not summary["sent_on_time"]:
        verdict = f"NOT kept: the producer fell behind ({lateness})"
    else:
        verdict = f"NOT kept: calls were sent on time ({lateness}) but answered more slowly"
    if summary["target_rate"] is not None:
        lines.append(f"{summary['target']}: {summary['achieved_rate']:.1f}/s achieved, target "
                     f"{summary['target_rate']:g}/s: {verdict}")
    else:
        lines.append(f"schedule {verdict}")
    lines.append("")
    header = ["call", *(result.value for result in Result)]
    rows = [[call, *(str(counts[result.value]) for result in Result)]
            for call, counts in summary["by_call"].items()]
    rows.append(["total", *(str(summary["outcomes"][result.value]) for result in Result)])
    lines += _table(header, rows)
    if summary["messages"]:
        lines.append("")
        lines += _table(["message", "count"],
                        [[message or "(none)", str(count)]
                         for message, count in summary["messages"].items()])
    lines.append("")
    latency = summary["latency_ms"]
    lines += _table(["latency from scheduled send", "ms"],
                    [[name, f"{value:.2f}"] for name, value in latency.items()])
    return "\n".join(lines)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first, *rest = cells
        right = (cell.rjust(width) for cell, width in zip(rest, widths[1:], strict=True))
        return "  ".join([first.ljust(widths[0]), *right])

    return [line(header), "  ".join("-" * width for width in widths), *(line(row) for row in rows)]

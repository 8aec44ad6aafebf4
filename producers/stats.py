"""Live statistics of a run: outcome counts, send lag and latency percentiles.

Latency is measured from each call's scheduled send time to its result, so a
producer or database that falls behind shows up in the latency instead of
silently lowering the rate (no coordinated omission).

Latencies are kept in a histogram of integer microseconds: exact below 4,096 us,
above that rounded down to 12 significant bits (at most 0.05% low), so a long
run at a high rate needs a few thousand counters, not one number per call.
Percentiles use the nearest-rank definition: the p-th percentile is the smallest
recorded value with at least p% of the samples at or below it.

Outcomes are counted per call and per message kind (`Card Disabled`, `Remaining
Balance`), so a summary says why calls were rejected, not only how many. Through
Kafka the producer only learns that a message was published, so its `accepted`
outcome is shown as `published`.
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
    reasons: Counter[tuple[str, Result, str]] = field(default_factory=Counter)
    targeted: int = 0     # completed events of the stream the target rate describes
    sent: int = 0
    late: int = 0
    max_lag: float = 0.0

    def merge(self, other: Window) -> None:
        self.latency.merge(other.latency)
        self.results.update(other.results)
        self.by_call.update(other.by_call)
        self.messages.update(other.messages)
        self.reasons.update(other.reasons)
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


def outcome_names(published: bool = False) -> dict[Result, str]:
    """How outcomes are shown: through Kafka, `accepted` means published (nothing decided
    yet) and a publish is never rejected or fraud."""
    if published:
        return {Result.ACCEPTED: "published", Result.ERROR: Result.ERROR.value}
    return {result: result.value for result in Result}


class Stats:
    def __init__(self, target_rate: float | None, target_label: str, *,
                 published: bool = False) -> None:
        self.target_rate = target_rate
        self.target_label = target_label
        self.published = published
        self.window = Window()
        self.total = Window()
        self.unsent = 0
        self.skipped = 0  # events the simulation chose not to send (riders without a card)
        self.worst: tuple[int, float, float] | None = None  # p99 us, interval end, length

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
        kind = message_kind(outcome.message)
        window.messages[kind] += 1
        window.reasons[(event.label, outcome.result, kind)] += 1
        if targeted:
            window.targeted += 1

    def roll(self, seconds: float, elapsed: float) -> str:
        """The live line for the interval of `seconds` that just ended, `elapsed` seconds
        into the run; starts the next interval."""
        window, self.window = self.window, Window()
        self.total.merge(window)
        rate = window.completed / seconds if seconds > 0 else 0.0
        p99 = window.latency.percentile(99)
        if window.completed and (self.worst is None or p99 > self.worst[0]):
            self.worst = (p99, elapsed, seconds)
        line = f"[{elapsed:6.1f} s] last {seconds:.1f} s: {rate:.1f} calls/s"
        if self.target_rate is not None:
            line += (f" ({self.target_label} {window.targeted / seconds if seconds > 0 else 0:.1f}"
                     f"/s, target {self.target_rate:g}/s)")
        line += (f", p50 {ms(window.latency.percentile(50))} ms"
                 f", p95 {ms(window.latency.percentile(95))} ms"
                 f", p99 {ms(p99)} ms; ")
        line += ", ".join(f"{name} {window.results[result]}"
                          for result, name in outcome_names(self.published).items())
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
        # call -> outcome -> message kind -> count: outcomes in Result's order, the most
        # frequent message first
        order = list(Result)
        reasons: dict[str, dict[str, dict[str, int]]] = {}
        for (call, result, kind), count in sorted(
                total.reasons.items(),
                key=lambda item: (item[0][0], order.index(item[0][1]), -item[1], item[0][2])):
            reasons.setdefault(call, {}).setdefault(result.value, {})[kind] = count
        worst = None
        if self.worst is not None:
            p99, ended, length = self.worst
            worst = {"p99_ms": p99 / 1000, "ended_at_s": round(ended, 1),
                     "seconds": round(length, 1)}
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
            "skipped": self.skipped,
            "outcomes": {result.value: total.results[result] for result in Result},
            "by_call": calls,
            "messages": dict(total.messages.most_common()),
            "reasons": reasons,
            "outcome_names": {result.value: name
                              for result, name in outcome_names(self.published).items()},
            "latency_ms": {
                **{f"p{p:g}": histogram.percentile(p) / 1000 for p in PERCENTILES},
                "max": histogram.max_us / 1000,
                "mean": round(histogram.mean_us() / 1000, 3),
            },
            "worst_interval": worst,
        }


def reason_text(counts: dict[str, int]) -> str:
    """`Card Disabled 9, Card Invalid 5`: message kinds, the most frequent first."""
    return ", ".join(f"{message or '(no message)'} {count}" for message, count in counts.items())


def format_summary(name: str, summary: dict[str, Any]) -> str:
    """The final report: totals, outcomes per call, their messages, and the percentile table."""
    names: dict[str, str] = summary.get("outcome_names") or {r.value: r.value for r in Result}
    lines = [f"{name}: {summary['calls']} calls in {summary['elapsed_s']:.1f} s"
             f" ({summary['calls_per_s']:.1f} calls/s)"]
    lateness = (f"{summary['late']} of {summary['sent']} calls sent more than"
                f" {LATE_SECONDS * 1000:.0f} ms late, max lag {summary['max_send_lag_ms']:.0f} ms,"
                f" {summary['unsent']} not sent")
    if summary["rate_kept"]:
        verdict = f"kept ({lateness})"
    elif summary.get("skipped"):
        verdict = (f"NOT kept: {summary['skipped']} skipped by the simulation (see below), "
                   f"{lateness}")
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
    header = ["call", *names.values()]
    rows = [[call, *(str(counts[result]) for result in names)]
            for call, counts in summary["by_call"].items()]
    rows.append(["total", *(str(summary["outcomes"][result]) for result in names)])
    lines += _table(header, rows)
    reasons = [[call, names.get(result, result), message or "(no message)", str(count)]
               for call, outcomes in summary.get("reasons", {}).items()
               for result, messages in outcomes.items()
               for message, count in messages.items()]
    if reasons:
        lines.append("")
        lines += _table(["call", "outcome", "message", "count"], reasons, right_from=3)
    lines.append("")
    latency = summary["latency_ms"]
    lines += _table(["latency from scheduled send", "ms"],
                    [[name, f"{value:.2f}"] for name, value in latency.items()])
    return "\n".join(lines)


def _table(header: list[str], rows: list[list[str]], right_from: int = 1) -> list[str]:
    """Columns as wide as their content: the first `right_from` left-aligned, the rest
    (numbers) right-aligned."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(cell.ljust(width) if index < right_from else cell.rjust(width)
                         for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
                         ).rstrip()

    return [line(header), "  ".join("-" * width for width in widths), *(line(row) for row in rows)]

"""Percentile arithmetic and interval roll-up of the producers' statistics."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metro.producers.events import Entry, Exit, Outcome, Result
from metro.producers.stats import LatencyHistogram, Stats, bucket, format_summary


def histogram_of(samples: list[int]) -> LatencyHistogram:
    histogram = LatencyHistogram()
    for sample in samples:
        histogram.record(sample)
    return histogram


def test_nearest_rank_percentiles_of_one_to_hundred():
    histogram = histogram_of(list(range(100, 0, -1)))
    assert [histogram.percentile(p) for p in (1, 50, 90, 95, 99, 99.9, 100)] == \
        [1, 50, 90, 95, 99, 100, 100]
    assert histogram.mean_us() == 50.5
    assert histogram.max_us == 100


def test_percentiles_of_a_small_uneven_sample():
    histogram = histogram_of([5, 1, 3, 3, 40])
    # sorted 1 3 3 5 40; rank ceil(p/100 * 5): p20 -> 1st, p60 -> 3rd, p61 -> 4th, p81 -> 5th
    assert histogram.percentile(20) == 1
    assert histogram.percentile(50) == 3
    assert histogram.percentile(60) == 3
    assert histogram.percentile(61) == 5
    assert histogram.percentile(80) == 5
    assert histogram.percentile(81) == 40


def test_empty_histogram_and_bad_percentile():
    assert LatencyHistogram().percentile(99) == 0
    with pytest.raises(ValueError, match="percentile must be in"):
        histogram_of([1]).percentile(0)
    with pytest.raises(ValueError, match="percentile must be in"):
        histogram_of([1]).percentile(101)


def test_large_latencies_are_bucketed_slightly_low():
    histogram = histogram_of([1_000, 2_000_001, 3_999_999])
    assert histogram.percentile(33) == 1_000                      # exact below 4,096 us
    assert 2_000_001 * (1 - 1 / 2048) <= histogram.percentile(66) <= 2_000_001
    assert 3_999_999 * (1 - 1 / 2048) <= histogram.percentile(100) <= 3_999_999
    assert histogram.max_us == 3_999_999                          # max stays exact


@given(st.integers(min_value=0, max_value=10**10))
def test_bucket_is_a_close_lower_bound(microseconds):
    low = bucket(microseconds)
    assert low <= microseconds
    assert microseconds - low <= microseconds / 2048
    assert bucket(low) == low


def test_merge_equals_recording_everything_in_one():
    left, right = histogram_of([1, 2, 3, 9000]), histogram_of([4, 5, 6_000_000])
    left.merge(right)
    whole = histogram_of([1, 2, 3, 9000, 4, 5, 6_000_000])
    assert left.counts == whole.counts
    assert (left.samples, left.total_us, left.max_us) == (whole.samples, whole.total_us,
                                                          whole.max_us)


def test_intervals_roll_up_into_the_summary():
    now = datetime.now(UTC)
    stats = Stats(target_rate=2.0, target_label="entries")
    entry, exit_ = Entry(0.0, now, 1, 1), Exit(0.5, now, 1, 2)
    for lag in (0.0, 0.2):
        stats.sent(lag)
    stats.completed(entry, Outcome.of_decision(True, "Remaining Balance: 12.50"), 0.002, True)
    stats.completed(exit_, Outcome.of_decision(True, "Exit recorded"), 0.004, False)
    line = stats.roll(1.0, 1.0)
    assert line.startswith("[   1.0 s] last 1.0 s: 2.0 calls/s (entries 1.0/s, target 2/s),"
                           " p50 2.00 ms, p95 4.00 ms, p99 4.00 ms; accepted 2, rejected 0,"
                           " fraud 0, errors 0\n")
    assert "behind schedule: 1 of 2 calls sent more than 50 ms late (up to 200 ms)" in line
    stats.completed(entry, Outcome.of_decision(False, "Fraudulent transaction"), 0.001, True)
    stats.completed(entry, Outcome.error("connection lost"), 0.003, True)
    stats.completed(entry, Outcome.of_decision(False, "Card Disabled"), 0.001, True)
    stats.completed(entry, Outcome.of_decision(False, "Card Invalid"), 0.001, True)
    stats.completed(entry, Outcome.of_decision(False, "Card Disabled"), 0.001, True)
    stats.roll(1.0, 2.0)
    summary = stats.summary(2.0)
    assert summary["outcomes"] == {"accepted": 2, "rejected": 3, "fraud": 1, "errors": 1}
    assert summary["by_call"] == {
        "entry": {"accepted": 1, "rejected": 3, "fraud": 1, "errors": 1},
        "exit": {"accepted": 1, "rejected": 0, "fraud": 0, "errors": 0}}
    assert summary["messages"] == {"Card Disabled": 2, "Remaining Balance": 1,
                                   "Exit recorded": 1, "Fraudulent transaction": 1,
                                   "connection lost": 1, "Card Invalid": 1}
    assert summary["reasons"] == {
        "entry": {"accepted": {"Remaining Balance": 1},
                  "rejected": {"Card Disabled": 2, "Card Invalid": 1},
                  "fraud": {"Fraudulent transaction": 1}, "errors": {"connection lost": 1}},
        "exit": {"accepted": {"Exit recorded": 1}}}
    assert summary["latency_ms"]["p50"] == 1.0
    assert summary["latency_ms"]["max"] == 4.0
    assert summary["achieved_rate"] == 3.0
    assert summary["worst_interval"] == {"p99_ms": 4.0, "ended_at_s": 1.0, "seconds": 1.0}
    assert (summary["sent_on_time"], summary["rate_kept"]) == (False, False)
    text = format_summary("riders", summary).splitlines()
    assert text[1].startswith("entries: 3.0/s achieved, target 2/s: NOT kept: the producer fell"
                              " behind (1 of 2 calls sent more than 50 ms late")
    assert text[3:14] == [
        "call   accepted  rejected  fraud  errors",
        "-----  --------  --------  -----  ------",
        "entry         1         3      1       1",
        "exit          1         0      0       0",
        "total         2         3      1       1",
        "",
        "call   outcome   message                 count",
        "-----  --------  ----------------------  -----",
        "entry  accepted  Remaining Balance           1",
        "entry  rejected  Card Disabled               2",
        "entry  rejected  Card Invalid                1"]
    assert text[14:17] == ["entry  fraud     Fraudulent transaction      1",
                           "entry  errors    connection lost             1",
                           "exit   accepted  Exit recorded               1"]


def test_through_kafka_an_answer_counts_as_published():
    stats = Stats(target_rate=None, target_label="calls", published=True)
    stats.completed(Entry(0.0, datetime.now(UTC), 1, 1),
                    Outcome.of_decision(True, "published to RECHARGE"), 0.001, True)
    assert stats.roll(2.0, 2.0).endswith("; published 1, errors 0")
    text = format_summary("recharges", stats.summary(2.0)).splitlines()
    assert text[3:7] == ["call   published  errors", "-----  ---------  ------",
                         "entry          1       0", "total          1       0"]


def test_outcome_of_a_decision():
    assert Outcome.of_decision(True, "Card Expires: 2030-01-01").result is Result.ACCEPTED
    assert Outcome.of_decision(False, "Card Invalid").result is Result.REJECTED
    assert Outcome.of_decision(False, "Fraudulent transaction").result is Result.FRAUD

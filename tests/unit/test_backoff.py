"""The services' wait before retrying: doubling from 0.5 s up to 5 s, back to 0.5 s after a
session that lasted."""

from metro.backoff import Backoff


def test_waits_double_up_to_five_seconds_and_start_over_after_a_recovery():
    now = [100.0]
    backoff = Backoff(clock=lambda: now[0])
    delays = []
    for _ in range(6):
        backoff.attempt()
        now[0] += 1.0  # each attempt fails after a second
        delays.append(backoff.next_delay())
    assert delays == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    backoff.attempt()
    now[0] += 10.5  # this session ran longer than twice the longest wait: a recovery
    assert backoff.next_delay() == 0.5
    backoff.attempt()
    now[0] += 10.0  # exactly twice the longest wait is not yet a recovery
    assert backoff.next_delay() == 1.0

"""Ctrl-C and SIGTERM stop a long-running command, whatever it is doing with its stop event
when the signal comes: a real process, real signals."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from metro.stop_signals import StopSignals

# A service that does nothing but ask its stop event, as the bridge and the worker do
# between rounds: most of its time is spent inside Event.wait(), holding the event's lock.
BUSY_SERVICE = textwrap.dedent("""
    from metro.service_cli import run_until_stopped

    def run(stop):
        print("ready", flush=True)
        while not stop.wait(0):
            pass
        print("stopped", flush=True)

    run_until_stopped(run)
""")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_a_service_waiting_on_its_stop_event_stops_at_every_signal(signum):
    # With Event.set() in the signal handler, 13 of 20 such stops hung for good.
    for attempt in range(20):
        service = subprocess.Popen([sys.executable, "-c", BUSY_SERVICE], text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            assert service.stdout is not None
            assert service.stdout.readline() == "ready\n"
            service.send_signal(signum)
            output, _ = service.communicate(timeout=10)
        finally:
            if service.poll() is None:
                service.kill()
                service.communicate()
        assert (attempt, service.returncode, output) == (attempt, 0, "stopped\n")


def test_signals_are_counted_and_the_handlers_before_come_back():
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    stops = StopSignals()
    with stops.installed() as event:
        assert not event.is_set()
        signal.raise_signal(signal.SIGTERM)
        assert event.wait(5)
        signal.raise_signal(signal.SIGINT)
        relay = next(t for t in threading.enumerate() if t.name == "metro-stop-signals")
    assert stops.count == 2
    assert {signum: signal.getsignal(signum) for signum in before} == before
    assert not relay.is_alive()

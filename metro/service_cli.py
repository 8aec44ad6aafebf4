"""What the command lines share: argument types (every command's), and for the
long-running services (`metro bridge`, `metro worker`) logging set-up and running until
Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import logging
import math
import re
import threading
from collections.abc import Callable
from datetime import timedelta

from metro.stop_signals import StopSignals

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> timedelta:
    """90s, 15m, 24h, 7d, or plain seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (examples: 90s, 15m, 24h, 7d)")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2) or "s"])


def number(kind: type[int] | type[float], text: str) -> int | float:
    """text as a finite number of `kind`, or the argparse error saying it is not one
    (nan and inf would pass every comparison below, or fail in no words later)."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def positive(kind: type[int] | type[float], most: float | None = None,
             least: float | None = None) -> Callable[[str], int | float]:
    """An argparse type: a number of `kind` above 0 (and within [least, most] when given)."""
    def parse(text: str) -> int | float:
        value = number(kind, text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive: {text}")
        if (least is not None and value < least) or (most is not None and value > most):
            bounds = (f"from {least:g} to {most:g}" if least is not None and most is not None
                      else f"at least {least:g}" if least is not None else f"at most {most:g}")
            raise argparse.ArgumentTypeError(f"must be {bounds}: {text}")
        return value
    return parse


def at_least(minimum: int, kind: type[int] | type[float] = int) -> Callable[[str], int | float]:
    """An argparse type: a number of `kind` (a whole number by default) of at least
    minimum."""
    def parse(text: str) -> int | float:
        value = number(kind, text)
        if value < minimum:
            wanted = "must not be negative" if minimum == 0 else f"must be {minimum} or more"
            raise argparse.ArgumentTypeError(f"{wanted}: {text}")
        return value
    return parse


def tcp_port(most: int = 65535) -> Callable[[str], int]:
    """An argparse type: a TCP port from 1 to most."""
    def parse(text: str) -> int:
        if not text.isdigit() or not 0 < int(text) <= most:
            upto = "" if most == 65535 else f" up to {most}"
            raise argparse.ArgumentTypeError(f"not a TCP port{upto}: {text!r}")
        return int(text)
    return parse


def run_until_stopped(run: Callable[[threading.Event], None]) -> None:
    """Log with timestamps and levels, and run `run(stop)` until Ctrl-C or SIGTERM sets
    stop; the service then finishes what it does and returns."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    with StopSignals().installed() as stop:
        run(stop)

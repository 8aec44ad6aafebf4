"""Epoch numbers read by their magnitude, as the bridge and the loader take timestamps.

A number is seconds as Python's time.time() gives them (fractions allowed),
milliseconds as Java's currentTimeMillis(), or microseconds (VoltDB's
TIMESTAMP unit): whichever unit puts it in [EARLIEST, LATEST), the range every
timestamp metro is given must lie in (DESIGN.md). The ranges of the three units
are disjoint, so no number has two readings; one in none of them has none.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
_EARLIEST_S = int((EARLIEST - EPOCH).total_seconds())  # 946684800
_LATEST_S = int((LATEST - EPOCH).total_seconds())  # 7258118400
#   seconds       946,684,800 <= n < 7,258,118,400
#   milliseconds  946,684,800,000 <= n < 7,258,118,400,000
#   microseconds  946,684,800,000,000 <= n < 7,258,118,400,000,000
EPOCH_UNITS = (("seconds", 1), ("milliseconds", 1000), ("microseconds", 1_000_000))
# An epoch number as text: a sign, digits, a fraction, an exponent.
NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# Why a number has no reading, for messages: "timestamp N " + OUTSIDE.
OUTSIDE = ("is outside 2000-01-01..2200-01-01 (UTC) read as epoch seconds, milliseconds or"
           " microseconds")


def instant(number: Decimal) -> datetime | None:
    """The instant a finite epoch number stands for, fractions of a microsecond rounded
    to the nearest one (which may round up to LATEST itself); None when no unit puts
    the number in [EARLIEST, LATEST)."""
    for _, per_second in EPOCH_UNITS:
        if _EARLIEST_S * per_second <= number < _LATEST_S * per_second:
            with localcontext() as context:
                context.prec = 60
                micros = (number * (1_000_000 // per_second)).quantize(
                    Decimal(1), rounding=ROUND_HALF_EVEN)
            return EPOCH + timedelta(microseconds=int(micros))
    return None

"""Platform-issued identifiers: visit, settlement, registration and account-entry numbers.

All have the shape of the platform's own references: division (6) + ``yyyyMMddHHmmss`` (14) +
serial (10), 30 digits, unique within one simulator run because the serial never repeats.
"""

from __future__ import annotations

import datetime as dt
import itertools

from yibao_devkit.simulator import times


class Serials:
    """Issues unique 30-digit references for one division."""

    def __init__(self, division: str) -> None:
        self._division = division
        self._counter = itertools.count(1)

    def next(self, now: dt.datetime) -> str:
        """A fresh reference stamped with ``now``."""
        return f"{self._division}{now:{times.COMPACT_FORMAT}}{next(self._counter) % 10**10:010d}"

"""Beijing time: the platform's clock, and the dates of the contract.

The platform keeps Beijing time (UTC+8; China has had no daylight saving since 1991), and every
date the contract names (a registration's ``start_date``, an eligibility ``begin_date``, a birth
date that must not be in the future) is a Beijing date. So "today" is the Beijing date of an
instant, never the host's local date: between 16:00 and 24:00 UTC the two differ. Clocks are
passed in; the default reads the host's clock as an instant, never its time zone.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TypeAlias

BEIJING = dt.timezone(dt.timedelta(hours=8), "CST")

Clock: TypeAlias = Callable[[], dt.datetime]  # an aware instant


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def beijing_now(clock: Clock = utc_now) -> dt.datetime:
    """The time in Beijing at the instant ``clock`` gives (which must carry its offset)."""
    instant = clock()
    if instant.utcoffset() is None:
        raise ValueError("a clock must give aware datetimes: a naive one means the host's zone")
    return instant.astimezone(BEIJING)


def beijing_today(clock: Clock = utc_now) -> dt.date:
    """The Beijing date at the instant ``clock`` gives: the contract's "today"."""
    return beijing_now(clock).date()

"""The platform's clock and its time formats.

The platform runs on Beijing time (UTC+8, no daylight saving), so a fixed offset is exact and
needs no time-zone database. The clock is injectable so tests can pin or advance time.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import TypeAlias

BEIJING = dt.timezone(dt.timedelta(hours=8), "CST")

Clock: TypeAlias = Callable[[], dt.datetime]

DATE_FORMAT = "%Y-%m-%d"  # yyyy-MM-dd: dates in answers, e.g. brdy
DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # yyyy-MM-dd HH:mm:ss: inf_time, begntime, sign_time
COMPACT_FORMAT = "%Y%m%d%H%M%S"  # yyyyMMddHHmmss: inside msgid and inf_refmsgid


def beijing_now() -> dt.datetime:
    """The current time in Beijing."""
    return dt.datetime.now(BEIJING)


def format_date(value: dt.date) -> str:
    return value.strftime(DATE_FORMAT)


def format_datetime(value: dt.datetime) -> str:
    return value.strftime(DATETIME_FORMAT)


def naive(value: dt.datetime) -> dt.datetime:
    """``value`` as a naive Beijing time, the form in which request fields are compared."""
    if value.tzinfo is None:
        return value
    return value.astimezone(BEIJING).replace(tzinfo=None)


def format_millis(value: dt.datetime) -> str:
    """``yyyyMMddHHmmssSSS``, the 17-character form of ``refmsg_time`` and ``respond_time``."""
    return value.strftime(COMPACT_FORMAT) + f"{value.microsecond // 1000:03d}"


def parse_datetime(text: str) -> dt.datetime | None:
    """A ``yyyy-MM-dd HH:mm:ss`` text as a naive datetime, or ``None`` if it is not one."""
    return _parse(text, DATETIME_FORMAT, 19)


def parse_date(text: str) -> dt.date | None:
    """A ``yyyy-MM-dd`` text as a date, or ``None`` if it is not one."""
    parsed = _parse(text, DATE_FORMAT, 10)
    return None if parsed is None else parsed.date()


def parse_month(text: str) -> tuple[int, int] | None:
    """A ``yyyyMM`` text (``cum_ym``) as (year, month), or ``None`` if it is not one."""
    parsed = _parse(text + "01", "%Y%m%d", 8) if len(text) == 6 else None
    return None if parsed is None else (parsed.year, parsed.month)


def parse_compact(text: str) -> dt.datetime | None:
    """A ``yyyyMMddHHmmss`` text as a naive datetime, or ``None`` if it is not one."""
    return _parse(text, COMPACT_FORMAT, 14)


# The exact shapes of the formats above: strptime accepts single-digit fields and surrounding
# oddities, and is slow enough to show in profiles, so fields are cut out by position instead.
_SHAPES: dict[str, re.Pattern[str]] = {
    DATE_FORMAT: re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})"),
    DATETIME_FORMAT: re.compile(
        r"([0-9]{4})-([0-9]{2})-([0-9]{2}) ([0-9]{2}):([0-9]{2}):([0-9]{2})"
    ),
    COMPACT_FORMAT: re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})"),
    "%Y%m%d": re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})"),
}


def _parse(text: str, pattern: str, length: int) -> dt.datetime | None:
    match = _SHAPES[pattern].fullmatch(text) if len(text) == length else None
    if match is None:
        return None
    parts = [int(part) for part in match.groups()] + [0, 0, 0]
    try:
        return dt.datetime(parts[0], parts[1], parts[2], parts[3], parts[4], parts[5])
    except ValueError:
        return None

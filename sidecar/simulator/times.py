"""The platform's clock and its time formats.

The platform runs on Beijing time (UTC+8, no daylight saving), so a fixed offset is exact and
needs no time-zone database. The clock is injectable so tests can pin or advance time.
"""

from __future__ import annotations

import datetime as dt
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


def format_millis(value: dt.datetime) -> str:
    """``yyyyMMddHHmmssSSS``, the 17-character form of ``refmsg_time`` and ``respond_time``."""
    return value.strftime(COMPACT_FORMAT) + f"{value.microsecond // 1000:03d}"


def parse_datetime(text: str) -> dt.datetime | None:
    """A ``yyyy-MM-dd HH:mm:ss`` text as a naive datetime, or ``None`` if it is not one."""
    return _parse(text, DATETIME_FORMAT, 19)


def parse_compact(text: str) -> dt.datetime | None:
    """A ``yyyyMMddHHmmss`` text as a naive datetime, or ``None`` if it is not one."""
    return _parse(text, COMPACT_FORMAT, 14)


def _parse(text: str, pattern: str, length: int) -> dt.datetime | None:
    # strptime accepts single-digit fields and surrounding oddities; insist on the exact width.
    if len(text) != length or not text.isascii():
        return None
    try:
        return dt.datetime.strptime(text, pattern)
    except ValueError:
        return None

"""Validators for the identifiers the platform accepts.

Pure functions with no gRPC types: each returns a problem description (or ``None``) so that the
caller can collect every violation of a request before answering. Messages never echo the value
they reject, because the values are personal data.
"""

from __future__ import annotations

import datetime as dt
import re

from sidecar.domain.beijing import beijing_today

# GB 11643-1999: weights of the first 17 digits, and the check character for each sum mod 11.
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK_CHARS = "10X98765432"

# GB/T 2260 province-level prefixes (the first two digits of every division code).
PROVINCE_PREFIXES = frozenset(
    {
        "11", "12", "13", "14", "15",  # 华北: 北京 天津 河北 山西 内蒙古
        "21", "22", "23",  # 东北: 辽宁 吉林 黑龙江
        "31", "32", "33", "34", "35", "36", "37",  # 华东
        "41", "42", "43", "44", "45", "46",  # 中南
        "50", "51", "52", "53", "54",  # 西南
        "61", "62", "63", "64", "65",  # 西北
        "71", "81", "82",  # 台湾 香港 澳门
    }
)  # fmt: skip

_DIGITS17 = re.compile(r"[0-9]{17}")
_RESIDENT_ID = re.compile(r"[0-9]{17}[0-9X]")
_DIVISION = re.compile(r"[0-9]{6}")
_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")

NAME_MAX_CHARS = 50  # the platform's psn_name is 50 long
REQUEST_ID_MAX_CHARS = 64


def resident_id_check_char(first17: str) -> str:
    """The GB 11643 check character (``0``-``9`` or ``X``) for the first 17 digits."""
    if not _DIGITS17.fullmatch(first17):
        raise ValueError("expected exactly 17 ASCII digits")
    total = sum(int(d) * w for d, w in zip(first17, _ID_WEIGHTS, strict=True))
    return _ID_CHECK_CHARS[total % 11]


def check_resident_id(number: str, *, today: dt.date | None = None) -> str | None:
    """Problems with an 18-character resident identity number (居民身份证号码), or ``None``.

    Checks the shape, the province of the address code, the birth date (a real date, not in the
    future, not before 1900) and the check character. A lower-case ``x`` is refused rather than
    silently fixed: the caller should normalise before it signs anything.
    """
    if len(number) != 18:
        return "must be 18 characters"
    if not _RESIDENT_ID.fullmatch(number):
        return "must be 17 digits followed by a digit or upper-case X"
    if number[:2] not in PROVINCE_PREFIXES:
        return "address code names no province"
    try:
        born = dt.date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return "birth date is not a calendar date"
    if born.year < 1900 or born > (today or beijing_today()):
        return "birth date is out of range"
    if resident_id_check_char(number[:17]) != number[17]:
        return "check digit does not match (GB 11643)"
    return None


def check_division_code(code: str) -> str | None:
    """Problems with a six-digit administrative division code (行政区划代码), or ``None``."""
    if not _DIVISION.fullmatch(code):
        return "must be 6 digits"
    if code[:2] not in PROVINCE_PREFIXES:
        return "names no province"
    return None


def check_person_name(name: str) -> str | None:
    """Problems with a person's name as the platform stores it, or ``None``."""
    if not name.strip():
        return "must not be empty"
    if len(name) > NAME_MAX_CHARS:
        return f"must be at most {NAME_MAX_CHARS} characters"
    if name != name.strip():
        return "must not start or end with white space"
    if any(not ch.isprintable() for ch in name):
        return "must not contain control characters"
    return None


def check_request_id(request_id: str) -> str | None:
    """Problems with a caller-chosen idempotency key, or ``None``."""
    if not request_id:
        return "must not be empty"
    if not _REQUEST_ID.fullmatch(request_id):
        return f"must be 1-{REQUEST_ID_MAX_CHARS} characters of A-Z, a-z, 0-9, '_' and '-'"
    return None


def check_iso_date(value: str) -> str | None:
    """Problems with an ISO-8601 calendar date ``YYYY-MM-DD``, or ``None``."""
    if len(value) != 10 or value[4] != "-" or value[7] != "-":
        return "must be a date written YYYY-MM-DD"
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        return "must be a date written YYYY-MM-DD"
    return None

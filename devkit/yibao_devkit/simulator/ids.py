"""The simulator's own checks of resident ID numbers and division codes.

Written apart from the sidecar's validators on purpose: the simulator plays the platform, and a
bug shared by both sides would pass every test. GB 11643-1999's check character is the ISO 7064
MOD 11-2 check (weights ``2**(17 - i) mod 11``); GB/T 2260's province codes are listed below.
"""

from __future__ import annotations

import datetime as dt

# GB/T 2260 province-level codes: the first two digits of a division code or resident ID.
PROVINCE_PREFIXES = frozenset(
    [
        "11",
        "12",
        "13",
        "14",
        "15",
        "21",
        "22",
        "23",
        "31",
        "32",
        "33",
        "34",
        "35",
        "36",
        "37",
        "41",
        "42",
        "43",
        "44",
        "45",
        "46",
        "50",
        "51",
        "52",
        "53",
        "54",
        "61",
        "62",
        "63",
        "64",
        "65",
        "71",
        "81",
        "82",
    ]
)


def resident_id_check_char(first17: str) -> str:
    """The ISO 7064 MOD 11-2 check character (``0``-``9`` or ``X``) of 17 ASCII digits."""
    if len(first17) != 17 or not all("0" <= c <= "9" for c in first17):
        raise ValueError("expected exactly 17 ASCII digits")
    remainder = sum(int(c) * pow(2, 17 - i, 11) for i, c in enumerate(first17)) % 11
    check = (12 - remainder) % 11
    return "X" if check == 10 else str(check)


def check_resident_id(number: str, *, today: dt.date) -> str | None:
    """Why ``number`` is not a plausible 18-character resident ID on ``today``, or ``None``."""
    if len(number) != 18 or not all("0" <= c <= "9" for c in number[:17]):
        return "not 17 digits and a check character"
    if number[:2] not in PROVINCE_PREFIXES:
        return "no province"
    try:
        born = dt.date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return "no birth date"
    if not dt.date(1900, 1, 1) <= born <= today:
        return "birth date out of range"
    if resident_id_check_char(number[:17]) != number[17]:
        return "check character"
    return None

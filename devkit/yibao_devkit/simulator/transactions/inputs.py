"""Reading a transaction's ``input`` the way the platform does: named sections of strings.

Amounts arrive as JSON numbers (parsed as :class:`~decimal.Decimal`, never ``float``) or, from
some senders, as strings; :func:`money` accepts both and turns them into integer fen, refusing
anything with more than two decimals.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Mapping, Sequence
from typing import Any

from yibao_devkit.simulator import errors, times


def section(payload: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """The object under ``key`` (e.g. ``data``, ``signIn``), or a refusal naming it."""
    value = payload.get(key)
    if value is None:
        raise errors.Refusal(errors.FIELD_MISSING.format(field=key))
    if not isinstance(value, Mapping):
        raise errors.Refusal(errors.FIELD_BAD_VALUE.format(field=key))
    return value


def rows(payload: Mapping[str, Any], key: str) -> Sequence[Mapping[str, Any]]:
    """The list of objects under ``key`` (e.g. ``feedetail``); a single object counts as one."""
    value = payload.get(key)
    if value is None:
        raise errors.Refusal(errors.FIELD_MISSING.format(field=key))
    if isinstance(value, Mapping):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(row, Mapping) for row in value):
        raise errors.Refusal(errors.FIELD_BAD_VALUE.format(field=key))
    return value


def text(data: Mapping[str, Any], field: str, limit: int, *, required: bool = True) -> str:
    """A string field up to ``limit`` characters; ``""`` when optional and absent or null."""
    value = data.get(field)
    if value is None or value == "":
        if required:
            raise errors.Refusal(errors.FIELD_MISSING.format(field=field))
        return ""
    if not isinstance(value, str):
        raise errors.Refusal(errors.FIELD_NOT_STRING.format(field=field))
    if len(value) > limit:
        raise errors.Refusal(errors.FIELD_TOO_LONG.format(field=field, limit=limit))
    return value


def choice(data: Mapping[str, Any], field: str, allowed: frozenset[str], default: str = "") -> str:
    """A code field that must be one of ``allowed``; ``default`` when absent (if non-empty)."""
    value = text(data, field, 6, required=not default) or default
    if value not in allowed:
        raise errors.Refusal(errors.FIELD_BAD_VALUE.format(field=field))
    return value


def number(data: Mapping[str, Any], field: str) -> decimal.Decimal:
    """A required non-negative decimal (a count, a unit price), exact."""
    value = data.get(field)
    if value is None or value == "":
        raise errors.Refusal(errors.FIELD_MISSING.format(field=field))
    if isinstance(value, bool) or not isinstance(value, int | str | decimal.Decimal):
        raise errors.Refusal(errors.NUMBER_INVALID.format(field=field))
    try:
        parsed = decimal.Decimal(value)
    except decimal.InvalidOperation:
        raise errors.Refusal(errors.NUMBER_INVALID.format(field=field)) from None
    if not parsed.is_finite() or parsed < 0:
        raise errors.Refusal(errors.NUMBER_INVALID.format(field=field))
    return parsed


def money(data: Mapping[str, Any], field: str) -> int:
    """A required non-negative amount in yuan with at most two decimals, as integer fen."""
    try:
        amount = number(data, field)
    except errors.Refusal:
        raise errors.Refusal(errors.AMOUNT_INVALID.format(field=field)) from None
    fen = amount * 100
    if fen != fen.to_integral_value():
        raise errors.Refusal(errors.AMOUNT_INVALID.format(field=field))
    return int(fen)


def moment(data: Mapping[str, Any], field: str, *, required: bool = True) -> dt.datetime | None:
    """A ``yyyy-MM-dd HH:mm:ss`` field as a naive Beijing time; ``None`` if optional and absent."""
    value = text(data, field, 19, required=required)
    if not value:
        return None
    parsed = times.parse_datetime(value)
    if parsed is None:
        raise errors.Refusal(errors.DATE_INVALID.format(field=field))
    return parsed


def day(data: Mapping[str, Any], field: str, *, required: bool = True) -> dt.date | None:
    """A ``yyyy-MM-dd`` field (a full ``yyyy-MM-dd HH:mm:ss`` is accepted too) as a date."""
    value = text(data, field, 19, required=required)
    if not value:
        return None
    parsed_day = times.parse_date(value)
    if parsed_day is not None:
        return parsed_day
    parsed = times.parse_datetime(value)
    if parsed is None:
        raise errors.Refusal(errors.DATE_INVALID.format(field=field))
    return parsed.date()

"""Reading a transaction's ``input`` the way the platform does: named sections of strings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sidecar.simulator import errors


def section(payload: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """The object under ``key`` (e.g. ``data``, ``signIn``), or a refusal naming it."""
    value = payload.get(key)
    if value is None:
        raise errors.Refusal(errors.FIELD_MISSING.format(field=key))
    if not isinstance(value, Mapping):
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

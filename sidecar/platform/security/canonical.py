"""The scheme-B string to sign (医保移动支付 2.0.1).

The rule as published: every field except ``signData``, ``encData`` and ``extra``, with empty
values dropped, keys in ascending ASCII order, joined as ``k=v`` with ``&``, where ``data`` is
the business data as compact JSON with keys sorted, empty values dropped, and numbers and
booleans written as strings; then ``&key=<appSecret>`` appended.

The published rule leaves details open. This module fixes them (each one tested):

Empty
    ``None``, ``""``, ``[]`` and ``{}``. A whitespace-only string is data, not empty. Dropping
    applies to object members at every depth of ``data`` and to the top-level fields. It is
    bottom-up: an object whose members were all dropped is ``{}`` and is dropped in turn.
    Array elements are never dropped (their positions carry meaning); an empty element is
    written as itself (``null``, ``""``, ``[]``, ``{}``), an object element is pruned inside.
Nested values
    Objects at any depth are written with keys sorted, arrays in their order, both compact
    (``,`` and ``:``), strings with non-ASCII kept as is (``ensure_ascii=False``) and JSON's
    escapes for quotes, backslashes and control characters.
Scalars
    Inside JSON, numbers and booleans become JSON strings: ``5`` -> ``"5"``, ``true`` ->
    ``"true"``, ``Decimal("12.50")`` -> ``"12.50"`` (exact, its own scale, never exponent form;
    floats are refused, see ``json_text``). Top-level values are written bare: ``timestamp=
    1700000000000``, ``flag=true``; a top-level object or array is written as JSON like ``data``.
Order
    Keys sort by Unicode code point, which is ASCII order for ASCII keys (the platform's keys
    are ASCII; Java's UTF-16 order differs only for characters beyond U+FFFF).
Key
    ``key=<appSecret>`` is appended with ``&``; if every field was empty the string is just
    ``key=<appSecret>``. Values are not escaped: a ``&`` or ``=`` inside a value is written as
    is, as the published rule and the peers' SDKs do.

The knobs are :class:`CanonicalConfig`; its defaults are the rule above.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sidecar.platform.security.errors import MalformedSecuredMessage
from sidecar.platform.security.json_text import decimal_text, string_literal

DEFAULT_EXCLUDED = frozenset({"signData", "encData", "extra"})


@dataclass(frozen=True)
class CanonicalConfig:
    """How the string to sign is built; the defaults are the published rule."""

    excluded_fields: frozenset[str] = field(default_factory=lambda: DEFAULT_EXCLUDED)
    secret_label: str = "key"  # noqa: S105 - a label, not a secret; the appended "&key=<appSecret>"
    drop_empty_strings: bool = True  # "" counts as empty (None always does)
    drop_empty_containers: bool = True  # [] and {} count as empty
    prune_nested: bool = True  # drop empty members inside objects at every depth, not just top
    scalars_as_strings: bool = True  # numbers/booleans inside JSON become JSON strings


class _Empty:
    """Marker for a value that was dropped."""


_DROPPED = _Empty()


def canonical_string(fields: Mapping[str, Any], config: CanonicalConfig | None = None) -> str:
    """``k=v&k=v...`` of the signed fields (without the appended secret)."""
    config = config or CanonicalConfig()
    pairs: list[tuple[str, str]] = []
    for name, value in fields.items():
        if not isinstance(name, str):
            raise MalformedSecuredMessage("fields", "has a non-string field name")
        if name in config.excluded_fields:
            continue
        kept = _prune(value, config, name)
        if kept is _DROPPED:
            continue
        pairs.append((name, _top_level_text(kept, config, name)))
    pairs.sort(key=lambda pair: pair[0])
    return "&".join(f"{name}={text}" for name, text in pairs)


def string_to_sign(
    fields: Mapping[str, Any], app_secret: str, config: CanonicalConfig | None = None
) -> str:
    """The canonical string with ``&key=<appSecret>`` appended: what signData signs."""
    config = config or CanonicalConfig()
    canonical = canonical_string(fields, config)
    tail = f"{config.secret_label}={app_secret}"
    return f"{canonical}&{tail}" if canonical else tail


def canonical_json(
    value: Any, config: CanonicalConfig | None = None, *, field: str = "data"
) -> str:
    """The canonical JSON of one value (as ``data`` is written in the string to sign)."""
    config = config or CanonicalConfig()
    kept = _prune(value, config, field)
    return "" if kept is _DROPPED else _json(kept, config, field)


def _is_empty(value: Any, config: CanonicalConfig) -> bool:
    if value is None:
        return True
    if config.drop_empty_strings and isinstance(value, str) and value == "":
        return True
    containers = (Mapping, list, tuple)
    return config.drop_empty_containers and isinstance(value, containers) and not value


def _prune(value: Any, config: CanonicalConfig, field: str, depth: int = 0) -> Any:
    """``value`` with empty object members removed bottom-up, or _DROPPED if it is empty.

    Depth 0 is a top-level field, depth 1 a member of ``data``; deeper members are dropped
    only with ``prune_nested``. Array elements are never dropped, only cleaned inside.
    """
    if isinstance(value, Mapping):
        members: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise MalformedSecuredMessage(field, "has a non-string object key")
            kept = _prune(item, config, field, depth + 1)
            if kept is not _DROPPED:
                members[key] = kept
        value = members
    elif isinstance(value, list | tuple):
        value = [_element(item, config, field, depth + 1) for item in value]
    droppable = depth <= 1 or config.prune_nested
    return _DROPPED if droppable and _is_empty(value, config) else value


def _element(item: Any, config: CanonicalConfig, field: str, depth: int) -> Any:
    if isinstance(item, Mapping | list | tuple):
        kept = _prune(item, config, field, depth)
        if kept is _DROPPED:
            return {} if isinstance(item, Mapping) else []
        return kept
    return item


def _top_level_text(value: Any, config: CanonicalConfig, field: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping | list | tuple):
        return _json(value, config, field)
    return _scalar_text(value, field)


def _scalar_text(value: Any, field: str) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, Decimal):
        return decimal_text(value, field=field)
    if isinstance(value, float):
        raise MalformedSecuredMessage(field, "contains a float; amounts must be Decimal")
    raise MalformedSecuredMessage(field, f"contains a {type(value).__name__}, not JSON")


def _json(value: Any, config: CanonicalConfig, field: str) -> str:
    if isinstance(value, Mapping):
        members = sorted(value.items(), key=lambda member: member[0])
        body = ",".join(f"{string_literal(k)}:{_json(v, config, field)}" for k, v in members)
        return "{" + body + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_json(item, config, field) for item in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, str):
        return string_literal(value)
    text = _scalar_text(value, field)
    return string_literal(text) if config.scalars_as_strings else text

"""The scheme-B string to sign, written from the reference's words (platform-protocol.md §5 B).

The words: "every field except ``signData``, ``encData`` and ``extra``, with empty values
dropped, keys in ascending ASCII order, joined as ``k=v`` with ``&``, where ``data`` is the
business data as compact JSON with keys sorted, empty values dropped, and numbers and booleans
written as strings; then ``&key=<appSecret>`` is appended."

How this module reads them where they leave room:

* *empty* is ``null``, ``""``, ``[]`` and ``{}``; an object whose members were all empty is
  itself empty (dropping works from the leaves up). A string of spaces is not empty;
* inside an array nothing is dropped (an element's position is data), but an object element
  is cleaned like any object and an emptied one stays as ``{}``;
* *numbers and booleans as strings*: inside the JSON, ``5`` is written ``"5"``, ``true``
  ``"true"``, an amount ``"12.50"`` with its scale; outside JSON (a top-level field such as
  ``timestamp``) the value's text is written bare;
* strings are JSON string literals with non-ASCII characters as themselves;
* ``&`` and ``=`` inside values are not escaped (the published rule escapes nothing).
"""

from __future__ import annotations

import decimal
import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from yibao_devkit.simulator.wire import Money

UNSIGNED_FIELDS: Final = frozenset({"signData", "encData", "extra"})


def string_to_sign(fields: Mapping[str, Any], app_secret: str) -> str:
    """``k=v&...&key=<appSecret>`` over ``fields`` (which include ``data`` in clear)."""
    pairs = []
    for name in sorted(fields):
        if name in UNSIGNED_FIELDS:
            continue
        value = _without_empties(fields[name])
        if _is_empty(value):
            continue
        pairs.append(f"{name}={_bare(value)}")
    pairs.append(f"key={app_secret}")
    return "&".join(pairs)


def _is_empty(value: Any) -> bool:
    if value is None or value == "":
        return True
    return isinstance(value, Mapping | list | tuple) and len(value) == 0


def _without_empties(value: Any) -> Any:
    if isinstance(value, Mapping):
        cleaned = {key: _without_empties(item) for key, item in value.items()}
        return {key: item for key, item in cleaned.items() if not _is_empty(item)}
    if isinstance(value, list | tuple):
        return [_without_empties(item) for item in value]
    return value


def _bare(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping | list | tuple):
        return _json(value)
    return _scalar(value)


def _json(value: Any) -> str:
    if isinstance(value, Mapping):
        members = (f"{_quoted(key)}:{_json(value[key])}" for key in sorted(value))
        return "{" + ",".join(members) + "}"
    if isinstance(value, Sequence) and not isinstance(value, str):
        return "[" + ",".join(_json(item) for item in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, str):
        return _quoted(value)
    return _quoted(_scalar(value))


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Money):
        return value.to_json()
    if isinstance(value, decimal.Decimal) and value.is_finite():
        return format(value, "f")
    raise TypeError(f"{type(value).__name__} has no place in the string to sign")


def _quoted(text: str) -> str:
    if not isinstance(text, str):
        raise TypeError("JSON object keys are strings")
    return json.dumps(text, ensure_ascii=False)

"""The exact JSON bytes that get encrypted and signed, and a strict parser for what comes back.

A signature covers bytes, so the bytes must be defined. :func:`dumps` writes compact JSON
(separators ``,`` and ``:``, no spaces), UTF-8 with non-ASCII characters as themselves
(``ensure_ascii=False``, as the envelope module does), object keys in the order given, and:

* ``Decimal`` as a JSON number written exactly with its own scale and never in exponent form
  (``Decimal("12.50")`` -> ``12.50``, ``Decimal("1E+2")`` -> ``100``): money never passes
  through float;
* ``float`` refused: a float amount has already lost its exact value, and its text differs
  between languages, so the peer could not reproduce the bytes;
* NaN and infinities refused (not JSON), non-string keys refused (JSON has none).

:func:`loads` parses UTF-8 JSON with numbers that have a fraction or exponent as ``Decimal``,
and refuses duplicate keys (the signer and we could pick different duplicates), NaN/Infinity,
and absurd nesting or number sizes, each as one named error.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from sidecar.platform.security.errors import MalformedSecuredMessage, SecurityError

# Decimal.adjusted() bound: 10**±100 is far beyond any amount and keeps "f" formatting small.
MAX_DECIMAL_EXPONENT = 100


def dumps(value: Any, *, field: str = "data") -> bytes:
    """Compact UTF-8 JSON of ``value``, keys in the given order; see the module docstring."""
    parts: list[str] = []
    try:
        _write(value, parts, field)
    except RecursionError:
        raise MalformedSecuredMessage(field, "is nested too deeply") from None
    return "".join(parts).encode("utf-8")


def decimal_text(value: Decimal, *, field: str) -> str:
    """A finite Decimal written exactly, without exponent: ``12.50``, ``-3``, ``100``."""
    if not value.is_finite():
        raise MalformedSecuredMessage(field, "is not a finite number")
    if abs(value.adjusted()) > MAX_DECIMAL_EXPONENT:
        raise MalformedSecuredMessage(field, "is a number too large or too small to write")
    return format(value, "f")


def string_literal(text: str) -> str:
    """A JSON string literal, non-ASCII kept as is (Python's json escaping rules)."""
    return json.dumps(text, ensure_ascii=False)


def loads(data: bytes, *, field: str, error: type[SecurityError] = MalformedSecuredMessage) -> Any:
    """Parse UTF-8 JSON strictly; any failure raises ``error`` naming ``field``."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise error(field, "is not UTF-8 text") from None
    try:
        return json.loads(
            text,
            parse_float=Decimal,
            parse_constant=_no_constant,
            object_pairs_hook=_unique_keys,
        )
    except _DuplicateKey:
        raise error(field, "has a duplicate key in a JSON object") from None
    except RecursionError:
        raise error(field, "is nested too deeply") from None
    except ValueError:  # JSONDecodeError, NaN/Infinity, int too long to convert
        raise error(field, "is not valid JSON") from None


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _DuplicateKey
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _write(value: Any, out: list[str], field: str) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(string_literal(value))
    elif isinstance(value, int):
        out.append(str(int(value)))
    elif isinstance(value, Decimal):
        out.append(decimal_text(value, field=field))
    elif isinstance(value, float):
        raise MalformedSecuredMessage(field, "contains a float; amounts must be Decimal")
    elif isinstance(value, Mapping):
        out.append("{")
        for index, (key, item) in enumerate(value.items()):
            if not isinstance(key, str):
                raise MalformedSecuredMessage(field, "has a non-string object key")
            if index:
                out.append(",")
            out.append(string_literal(key))
            out.append(":")
            _write(item, out, field)
        out.append("}")
    elif isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _write(item, out, field)
        out.append("]")
    else:
        raise MalformedSecuredMessage(field, f"contains a {type(value).__name__}, not JSON")

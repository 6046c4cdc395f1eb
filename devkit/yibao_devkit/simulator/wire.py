"""The simulator's JSON writer, exact for money.

The platform writes amounts as JSON numbers with two decimals (``"balc": 1234.50``). Routing them
through ``float`` would invite rounding and lose the trailing zero, so amounts are kept in integer
fen and written by this small serializer, which emits the decimal digits directly. Everything else
is delegated to :mod:`json` for correct string escaping. Quantities that are not money (a count of
0.5 boxes, a unit price with four decimals) travel as :class:`decimal.Decimal`, written as given.
"""

from __future__ import annotations

import decimal
import json
import json.encoder
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

_quoted: Callable[[str], str] = json.encoder.encode_basestring  # no \\uXXXX for non-ASCII


@dataclass(frozen=True)
class Money:
    """An amount in integer fen (1/100 yuan), written as a JSON number with two decimals."""

    fen: int

    def __post_init__(self) -> None:
        if isinstance(self.fen, bool) or not isinstance(self.fen, int):
            raise TypeError("Money holds an integer number of fen")

    def to_json(self) -> str:
        """The exact decimal text, e.g. ``-12.05`` for -1205 fen."""
        sign = "-" if self.fen < 0 else ""
        yuan, fen = divmod(abs(self.fen), 100)
        return f"{sign}{yuan}.{fen:02d}"


Json: TypeAlias = (
    bool | int | str | Money | decimal.Decimal | Sequence["Json"] | Mapping[str, "Json"] | None
)
JsonObject: TypeAlias = Mapping[str, Json]


def dumps(value: Json) -> str:
    """Compact JSON text for ``value`` (non-ASCII characters kept as they are)."""
    parts: list[str] = []
    _write(value, parts)
    return "".join(parts)


def _write(value: Json, out: list[str]) -> None:
    # Leaves are written directly (json's C string escaper for text): this writer sits on every
    # answer's path, and a json.dumps call per leaf was most of the simulator's CPU time.
    if isinstance(value, str):
        out.append(_quoted(value))
    elif value is None:
        out.append("null")
    elif isinstance(value, bool):
        out.append("true" if value else "false")
    elif isinstance(value, int):
        out.append(int.__repr__(value))
    elif isinstance(value, Money):
        out.append(value.to_json())
    elif isinstance(value, decimal.Decimal):
        # Quantities and unit prices (cnt, pric) are echoed with the digits they arrived with.
        if not value.is_finite():
            raise TypeError("JSON has no NaN or Infinity")
        out.append(format(value, "f"))
    elif isinstance(value, Mapping):
        out.append("{")
        for index, (key, item) in enumerate(value.items()):
            if not isinstance(key, str):
                raise TypeError("JSON object keys must be strings")
            if index:
                out.append(",")
            out.append(_quoted(key))
            out.append(":")
            _write(item, out)
        out.append("}")
    elif isinstance(value, Sequence):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _write(item, out)
        out.append("]")
    else:
        raise TypeError(f"cannot write {type(value).__name__} as JSON")

"""The exact JSON bytes that are encrypted and signed, and the strict parser."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from sidecar.platform.security.errors import DecryptionFailed, MalformedSecuredMessage
from sidecar.platform.security.json_text import dumps, loads


def test_compact_utf8_in_the_given_order() -> None:
    value = {"b": 1, "a": [True, False, None], "名": "张三", "q": 'a"\\\n'}
    assert dumps(value) == '{"b":1,"a":[true,false,null],"名":"张三","q":"a\\"\\\\\\n"}'.encode()


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (Decimal("12.50"), b"12.50"),
        (Decimal("0.00"), b"0.00"),
        (Decimal("-0.01"), b"-0.01"),
        (Decimal("1E+2"), b"100"),
        (Decimal("1.5E-3"), b"0.0015"),
        (Decimal("12345678901234.56"), b"12345678901234.56"),
    ],
)
def test_decimals_exactly(amount: Decimal, text: bytes) -> None:
    assert dumps({"amt": amount}) == b'{"amt":' + text + b"}"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ({"amt": 0.1}, "float"),
        ({"amt": Decimal("NaN")}, "finite"),
        ({"amt": Decimal("-Infinity")}, "finite"),
        ({"amt": Decimal("1E+1000")}, "too large"),
        ({1: "x"}, "non-string"),
        ({"x": b"bytes"}, "bytes"),
        ({"x": {1, 2}}, "set"),
    ],
)
def test_values_without_exact_json(value: Any, reason: str) -> None:
    with pytest.raises(MalformedSecuredMessage, match=reason):
        dumps(value, field="input")


def test_loads_keeps_amounts_exact() -> None:
    assert loads(b'{"balc":1234.50,"n":2}', field="output") == {"balc": Decimal("1234.50"), "n": 2}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xff\xfe", "UTF-8"),
        (b'{"a":1,"a":2}', "duplicate key"),
        (b'{"a":NaN}', "not valid JSON"),
        (b'{"a":Infinity}', "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b"1" * 5000, "not valid JSON"),  # past Python's int digit limit
    ],
)
def test_loads_is_strict(data: bytes, reason: str) -> None:
    with pytest.raises(MalformedSecuredMessage, match=reason):
        loads(data, field="output")
    with pytest.raises(DecryptionFailed, match="encData"):
        loads(data, field="encData", error=DecryptionFailed)


def test_deep_nesting_on_output() -> None:
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(MalformedSecuredMessage, match="nested too deeply"):
        dumps(deep)

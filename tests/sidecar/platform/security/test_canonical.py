"""The scheme-B canonicaliser: the published rule plus the details canonical.py fixes."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.platform.security.canonical import (
    CanonicalConfig,
    canonical_json,
    canonical_string,
    string_to_sign,
)
from sidecar.platform.security.errors import MalformedSecuredMessage
from tests.vectors import named as vectors


def vector_fields() -> dict[str, Any]:
    return {
        "version": vectors.B_VERSION,
        "timestamp": vectors.B_TIMESTAMP,
        "signType": "SM2",
        "encType": "SM4",
        "appId": vectors.B_APP_ID,
        "data": vectors.B_DATA,
        "signData": "ignored",
        "encData": "ignored",
        "extra": {"ignored": True},
    }


def test_vector_string_to_sign() -> None:
    assert string_to_sign(vector_fields(), vectors.B_APP_SECRET) == vectors.B_STRING_TO_SIGN


def test_defaults_are_the_published_rule() -> None:
    config = CanonicalConfig()
    assert config.excluded_fields == {"signData", "encData", "extra"}
    assert config.secret_label == "key"
    assert config.drop_empty_strings and config.drop_empty_containers
    assert config.prune_nested and config.scalars_as_strings


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"a": None, "b": "", "c": [], "d": {}, "e": "x"}, '{"e":"x"}'),
        ({"a": " "}, '{"a":" "}'),  # whitespace is data
        ({"a": {"b": {"c": None}}, "z": 1}, '{"z":"1"}'),  # emptied objects go too, bottom-up
        ({"a": [None, "", [], {}, {"b": None}, 0]}, '{"a":[null,"",[],{},{},"0"]}'),
        ({"a": [[None], [{"b": ""}]]}, '{"a":[[null],[{}]]}'),
        ({"a": 0, "b": False, "c": Decimal("0")}, '{"a":"0","b":"false","c":"0"}'),
        ({"amt": Decimal("12.50")}, '{"amt":"12.50"}'),
        ({"amt": Decimal("1E+2")}, '{"amt":"100"}'),
        ({"amt": Decimal("-0.001")}, '{"amt":"-0.001"}'),
        ({"big": 12345678901234567890123}, '{"big":"12345678901234567890123"}'),
        ({"b": 1, "a": 2, "B": 3, "_": 4}, '{"B":"3","_":"4","a":"2","b":"1"}'),
        ({"名": "张三", "q": 'say "hi"\n'}, '{"q":"say \\"hi\\"\\n","名":"张三"}'),
    ],
)
def test_data_json(data: dict[str, Any], expected: str) -> None:
    assert canonical_json(data) == expected


def test_top_level_values_are_bare_and_empty_ones_dropped() -> None:
    fields = {"b": 5, "a": True, "c": "", "d": None, "e": Decimal("1.10"), "f": [], "g": "x&y=z"}
    assert canonical_string(fields) == "a=true&b=5&e=1.10&g=x&y=z"
    assert string_to_sign({"c": ""}, "SECRET") == "key=SECRET"


def test_data_that_is_entirely_empty_is_dropped() -> None:
    assert string_to_sign({"appId": "A", "data": {"x": None}}, "S") == "appId=A&key=S"


def test_knobs() -> None:
    data = {"a": "", "b": [], "c": {"d": None, "e": ""}, "n": 1}
    assert canonical_json(data, CanonicalConfig(drop_empty_strings=False)) == (
        '{"a":"","c":{"e":""},"n":"1"}'
    )
    assert canonical_json(data, CanonicalConfig(drop_empty_containers=False)) == (
        '{"b":[],"c":{},"n":"1"}'
    )
    assert canonical_json(data, CanonicalConfig(prune_nested=False)) == (
        '{"c":{"d":null,"e":""},"n":"1"}'
    )
    assert canonical_json({"n": 1, "t": True}, CanonicalConfig(scalars_as_strings=False)) == (
        '{"n":1,"t":true}'
    )
    custom = CanonicalConfig(excluded_fields=frozenset({"sign"}), secret_label="appSecret")
    assert string_to_sign({"sign": "x", "extra": "y"}, "S", custom) == "extra=y&appSecret=S"


@pytest.mark.parametrize(
    "value",
    [{"amt": 1.5}, {"amt": Decimal("NaN")}, {"amt": Decimal("Infinity")}, {1: "x"}, {"b": b"x"},
     {"amt": Decimal("1E+500")}],
)  # fmt: skip
def test_values_that_cannot_be_written_exactly(value: dict[Any, Any]) -> None:
    with pytest.raises(MalformedSecuredMessage, match="data"):
        canonical_string({"data": value})


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=8),
    st.decimals(
        allow_nan=False, allow_infinity=False, places=2, max_value=10**9, min_value=-(10**9)
    ),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=20,
)


def _shuffled(value: Any, rng: random.Random) -> Any:
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: _shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [_shuffled(v, rng) for v in value]
    return value


@given(st.dictionaries(st.text(max_size=6), json_values, max_size=6), st.integers())
def test_key_order_does_not_matter(data: dict[str, Any], seed: int) -> None:
    fields = {"appId": "A", "data": data, "timestamp": "1"}
    expected = string_to_sign(fields, "S")
    assert string_to_sign(_shuffled(fields, random.Random(seed)), "S") == expected
    assert string_to_sign(fields, "S") == expected  # deterministic


@given(st.dictionaries(st.text(max_size=6), json_values, max_size=6))
def test_canonical_json_is_sorted_compact_and_free_of_empty_members(data: dict[str, Any]) -> None:
    import json

    text = canonical_json(data)
    if not text:
        return
    parsed = json.loads(text)

    def check(value: Any, depth: int) -> None:
        if isinstance(value, dict):
            assert list(value) == sorted(value)
            for item in value.values():
                assert item not in (None, "", [], {})
                check(item, depth + 1)
        elif isinstance(value, list):
            for item in value:
                check(item, depth + 1)
        else:
            assert value is None or isinstance(value, str)  # scalars became strings

    check(parsed, 0)
    assert canonical_json(parsed) == text  # idempotent on its own output

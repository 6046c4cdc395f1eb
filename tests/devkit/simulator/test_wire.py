"""Amounts are written as exact decimals with two places, never through float."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from yibao_devkit.simulator.wire import Money, dumps


@pytest.mark.parametrize(
    ("fen", "text"),
    [(0, "0.00"), (5, "0.05"), (10, "0.10"), (123450, "1234.50"), (-1205, "-12.05"),
     (10**17 + 1, "1000000000000000.01")],
)  # fmt: skip
def test_money_is_exact(fen: int, text: str) -> None:
    assert dumps({"balc": Money(fen)}) == f'{{"balc":{text}}}'
    assert json.loads(dumps(Money(fen)), parse_float=Decimal) == Decimal(fen) / 100


def test_money_refuses_non_integers() -> None:
    with pytest.raises(TypeError):
        Money(1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Money(True)


def test_floats_are_refused_and_text_is_not_escaped() -> None:
    with pytest.raises(TypeError):
        dumps({"x": 1.5})  # type: ignore[dict-item]
    assert dumps({"name": "张三", "list": [None, True, 3]}) == (
        '{"name":"张三","list":[null,true,3]}'
    )

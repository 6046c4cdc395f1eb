"""The identifier validators: GB 11643 check digits, division codes, names, request IDs."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.domain import validation

# with 10 written "X". Weights computed from the formula, not copied from the module under test.
WEIGHTS = [pow(2, 17 - i, 11) for i in range(17)]


def reference_check(first17: str) -> str:
    value = (12 - sum(int(d) * w for d, w in zip(first17, WEIGHTS, strict=True)) % 11) % 11
    return "X" if value == 10 else str(value)


# A real-looking prefix: Beijing Chaoyang, born 1990-03-07, sequence 123.
VALID = "11010519900307123" + reference_check("11010519900307123")

birth_dates = st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2025, 12, 31))
addresses = st.sampled_from(["110105", "310115", "440305", "510107", "650102", "820000"])
sequences = st.integers(min_value=0, max_value=999).map(lambda n: f"{n:03d}")


@st.composite
def resident_ids(draw: st.DrawFn) -> str:
    first17 = draw(addresses) + draw(birth_dates).strftime("%Y%m%d") + draw(sequences)
    return first17 + reference_check(first17)


def test_known_number_is_valid() -> None:
    # Published textbook example of GB 11643: 11010519491231002X.
    assert validation.check_resident_id("11010519491231002X") is None
    assert validation.resident_id_check_char("11010519491231002") == "X"


@given(resident_ids())
def test_every_correctly_built_number_is_accepted(number: str) -> None:
    assert validation.check_resident_id(number, today=dt.date(2026, 1, 1)) is None


@given(resident_ids(), st.integers(min_value=0, max_value=16), st.integers(1, 9))
def test_any_single_digit_change_is_caught(number: str, position: int, delta: int) -> None:
    digit = (int(number[position]) + delta) % 10
    changed = number[:position] + str(digit) + number[position + 1 :]
    assert validation.check_resident_id(changed, today=dt.date(2026, 1, 1)) is not None


@given(resident_ids())
def test_wrong_check_character_is_caught(number: str) -> None:
    for other in "0123456789X":
        if other != number[17]:
            problem = validation.check_resident_id(number[:17] + other, today=dt.date(2026, 1, 1))
            assert problem == "check digit does not match (GB 11643)"


@given(st.text(max_size=30))
def test_arbitrary_text_never_crashes(text: str) -> None:
    result = validation.check_resident_id(text)
    assert result is None or isinstance(result, str)


@pytest.mark.parametrize(
    ("number", "problem"),
    [
        ("", "must be 18 characters"),
        ("1101051990030712", "must be 18 characters"),
        ("11010519900307123x", "must be 17 digits followed by a digit or upper-case X"),
        (
            "99010519900307123" + reference_check("99010519900307123"),
            "address code names no province",
        ),
        (
            "11010519900230123" + reference_check("11010519900230123"),
            "birth date is not a calendar date",
        ),
        ("11010518890101123" + reference_check("11010518890101123"), "birth date is out of range"),
    ],
)
def test_malformed_numbers_name_the_rule(number: str, problem: str) -> None:
    assert validation.check_resident_id(number) == problem


def test_messages_never_quote_the_value() -> None:
    bad = VALID[:17] + ("0" if VALID[17] != "0" else "1")
    problem = validation.check_resident_id(bad)
    assert problem is not None and bad not in problem and bad[:6] not in problem


def test_future_birth_date_is_refused() -> None:
    first17 = "110105" + "20300101" + "123"
    assert validation.check_resident_id(first17 + reference_check(first17)) == (
        "birth date is out of range"
    )


@pytest.mark.parametrize(
    ("code", "problem"),
    [
        ("110105", None),
        ("440300", None),
        ("11010", "must be 6 digits"),
        ("1101a5", "must be 6 digits"),
        ("990000", "names no province"),
        ("１１０１０５", "must be 6 digits"),
    ],
)
def test_division_codes(code: str, problem: str | None) -> None:
    assert validation.check_division_code(code) == problem


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("张三", True),
        ("欧阳娜娜", True),
        ("Maria Garcia", True),
        ("", False),
        ("  ", False),
        (" 张三", False),
        ("张\n三", False),
        ("张" * 50, True),
        ("张" * 51, False),
    ],
)
def test_names(name: str, ok: bool) -> None:
    assert (validation.check_person_name(name) is None) is ok


@given(st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True))
def test_request_ids_in_the_alphabet_are_accepted(request_id: str) -> None:
    assert validation.check_request_id(request_id) is None


@pytest.mark.parametrize("request_id", ["", "a" * 65, "has space", "中文", "semi;colon"])
def test_bad_request_ids(request_id: str) -> None:
    assert validation.check_request_id(request_id) is not None


@pytest.mark.parametrize(
    ("value", "ok"),
    [("2026-02-28", True), ("2026-02-29", False), ("20260228", False), ("2026-2-28", False)],
)
def test_iso_dates(value: str, ok: bool) -> None:
    assert (validation.check_iso_date(value) is None) is ok

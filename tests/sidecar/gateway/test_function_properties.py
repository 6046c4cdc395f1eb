"""Properties of the page-token codec and of the GetAccount / registration validators."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import TypeVar

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sidecar._proto.yibao.gateway.v1 import common_pb2 as common
from sidecar._proto.yibao.gateway.v1 import gateway_pb2 as gateway
from sidecar.domain import validation
from sidecar.errors import GatewayError
from sidecar.gateway.account import account_query
from sidecar.gateway.offsite_requests import cancellation, listing, submission
from sidecar.gateway.paging import BadPageToken, PageTokens, binding_of, page_size_of

T = TypeVar("T")
KEY = bytes(range(32))
TODAY = dt.date(2026, 11, 26)
SUBJECT = common.DataSubject(
    certificate_type=common.CERTIFICATE_TYPE_RESIDENT_ID_CARD,
    certificate_number="11010519491231002X",
    name="张三",
)

positions = st.dictionaries(
    st.text(min_size=1, max_size=8),
    st.integers(min_value=-(2**53), max_value=2**53) | st.text(max_size=20),
    max_size=4,
)


@given(position=positions, binding=st.binary(max_size=200))
def test_tokens_round_trip(position: dict[str, int | str], binding: bytes) -> None:
    tokens = PageTokens(KEY, clock=lambda: 1_800_000_000)
    try:
        token = tokens.issue(binding, position)
    except ValueError:  # never issues a token it would refuse to open
        assert len(json.dumps(position)) > 300
        return
    assert token.isascii() and "=" not in token
    assert tokens.open(token, binding) == position


@given(position=positions, binding=st.binary(max_size=50), other=st.binary(max_size=50))
def test_tokens_open_only_with_their_binding(
    position: dict[str, int | str], binding: bytes, other: bytes
) -> None:
    tokens = PageTokens(KEY, clock=lambda: 1_800_000_000)
    assume(len(json.dumps(position)) < 300)
    token = tokens.issue(binding, position)
    if other != binding:
        with pytest.raises(BadPageToken):
            tokens.open(token, other)
    with pytest.raises(BadPageToken):
        PageTokens(bytes(32), clock=lambda: 1_800_000_000).open(token, binding)


@given(position=positions, data=st.data())
def test_any_change_to_a_token_is_detected(
    position: dict[str, int | str], data: st.DataObject
) -> None:
    tokens = PageTokens(KEY, clock=lambda: 1_800_000_000)
    assume(len(json.dumps(position)) < 300)
    token = tokens.issue(b"b", position)
    index = data.draw(st.integers(min_value=0, max_value=len(token) - 1))
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    replacement = data.draw(st.sampled_from(alphabet).filter(lambda c: c != token[index]))
    changed = token[:index] + replacement + token[index + 1 :]
    try:
        opened = tokens.open(changed, b"b")
    except BadPageToken:
        return
    # Only the unused low bits of the last Base64 character can change without effect.
    assert index == len(token) - 1 and opened == position


@given(garbage=st.text(max_size=600))
def test_garbage_is_refused_never_crashes(garbage: str) -> None:
    with pytest.raises(BadPageToken):
        PageTokens(KEY).open(garbage, b"")


def test_tokens_expire() -> None:
    now = [1_800_000_000.0]
    tokens = PageTokens(KEY, max_age=60, clock=lambda: now[0])
    token = tokens.issue(b"", {"offset": 1})
    now[0] += 61
    with pytest.raises(BadPageToken):
        tokens.open(token, b"")


@given(size=st.integers(min_value=-(2**31), max_value=2**31 - 1))
def test_page_sizes(size: int) -> None:
    chosen = page_size_of(size)
    if size < 0:
        assert chosen is None
    else:
        assert chosen == (20 if size == 0 else min(size, 100))


def test_the_binding_ignores_token_and_size_only() -> None:
    one = gateway.GetAccountRequest(subject=SUBJECT, page_size=5, page_token="x")
    two = gateway.GetAccountRequest(subject=SUBJECT, page_size=9)
    three = gateway.GetAccountRequest(subject=SUBJECT, cumulative_year=2025)
    assert binding_of("M", "t", one) == binding_of("M", "t", two)
    assert binding_of("M", "t", one) not in (
        binding_of("M", "u", one), binding_of("N", "t", one), binding_of("M", "t", three),
    )  # fmt: skip


days = st.integers(min_value=-400, max_value=400)


def fields_of(error: GatewayError) -> list[str]:
    return [violation.field for violation in error.violations]


def outcome(call: Callable[[], T]) -> tuple[list[str], T | None]:
    """The fields an INVALID_ARGUMENT names (none if valid), and the value if valid."""
    try:
        return [], call()
    except GatewayError as error:
        reason = error.reason
        named = fields_of(error)
    assert reason == "INVALID_REQUEST"
    return named, None


@settings(max_examples=300)
@given(
    start=days,
    end=st.none() | days,
    backdate=st.integers(min_value=0, max_value=60),
    reason=st.sampled_from(sorted(gateway.OffsiteReason.values())),
    division=st.from_regex(r"[0-9]{6}", fullmatch=True),
    phone=st.text(max_size=25),
)
def test_submission_validation_names_exactly_the_broken_rules(
    start: int, end: int | None, backdate: int, reason: int, division: str, phone: str
) -> None:
    request = gateway.SubmitOffsiteRegistrationRequest(
        request_id="r-1",
        subject=SUBJECT,
        insurance_type=common.INSURANCE_TYPE_EMPLOYEE_BASIC,
        target_division_code=division,
        start_date=(TODAY + dt.timedelta(days=start)).isoformat(),
        end_date="" if end is None else (TODAY + dt.timedelta(days=end)).isoformat(),
        reason=reason,  # type: ignore[arg-type]
        contact_phone=phone,
        address="某地",
        hospital=common.MedicalInstitution(code="H31011500001", name="某医院"),
        diagnosis=common.Diagnosis(code="J06.900", name="感冒"),
    )
    expected = []
    if validation.check_division_code(division):
        expected.append("target_division_code")
    if start < -backdate:
        expected.append("start_date")
    needs_end = reason in (gateway.OFFSITE_REASON_TEMPORARY_TRAVEL, gateway.OFFSITE_REASON_REFERRAL)
    if (end is not None and end < start) or (end is None and needs_end):
        expected.append("end_date")
    if reason == gateway.OFFSITE_REASON_UNSPECIFIED:
        expected.append("reason")
    if not (1 <= len(phone) <= 20 and all(c in "0123456789+-" for c in phone)):
        expected.append("contact_phone")
    named, valid = outcome(
        lambda: submission(request, tenant="t", today=TODAY, max_backdate_days=backdate)
    )
    assert named == expected
    if valid is not None:
        assert valid.start == TODAY + dt.timedelta(days=start)
        assert valid.key.request_id == "r-1"


@given(
    start=st.none() | days,
    end=st.none() | days,
    year=st.integers(min_value=0, max_value=3000),
    size=st.integers(min_value=-5, max_value=500),
)
def test_account_validation(start: int | None, end: int | None, year: int, size: int) -> None:
    def day(offset: int | None) -> str:
        return "" if offset is None else (TODAY + dt.timedelta(days=offset)).isoformat()

    request = gateway.GetAccountRequest(
        subject=SUBJECT,
        cumulative_year=year,
        statement_start_date=day(start),
        statement_end_date=day(end),
        page_size=size,
    )
    first_day = (dt.date(TODAY.year, 1, 1) - TODAY).days
    effective_start = first_day if start is None else start
    effective_end = 0 if end is None else end
    expected = []
    if year != 0 and not 1998 <= year <= TODAY.year:
        expected.append("cumulative_year")
    if effective_end < effective_start:
        expected.append("statement_end_date")
    if size < 0:
        expected.append("page_size")
    tokens = PageTokens(KEY)
    named, query = outcome(lambda: account_query(request, tokens=tokens, tenant="t", today=TODAY))
    assert named == expected
    if query is not None:
        assert query.page_size == (20 if size == 0 else min(size, 100))
        assert query.through_month == (TODAY.month if query.year == TODAY.year else 12)


@given(registration_id=st.text(max_size=40), reason=st.text(max_size=210))
def test_cancellation_validation(registration_id: str, reason: str) -> None:
    request = gateway.CancelOffsiteRegistrationRequest(
        request_id="c-1", subject=SUBJECT, registration_id=registration_id, reason=reason
    )
    id_ok = 1 <= len(registration_id) <= 30 and all(
        c.isascii() and (c.isalnum() or c in "_-") for c in registration_id
    )
    reason_ok = len(reason) <= 200 and (not reason.strip() or reason.isprintable())
    named, _ = outcome(lambda: cancellation(request, tenant="t"))
    assert named == [f for f, ok in (("registration_id", id_ok), ("reason", reason_ok)) if not ok]


def test_listing_rejects_unknown_states_and_foreign_tokens() -> None:
    tokens = PageTokens(KEY)
    request = gateway.ListOffsiteRegistrationsRequest(subject=SUBJECT, states=[1, 42])
    with pytest.raises(GatewayError) as caught:
        listing(request, tokens=tokens, tenant="t")
    assert fields_of(caught.value) == ["states[1]"]
    ok = gateway.ListOffsiteRegistrationsRequest(subject=SUBJECT)
    token = tokens.issue(binding_of("ListOffsiteRegistrations", "t", ok), {"t": "x", "id": "1"})
    assert listing(
        gateway.ListOffsiteRegistrationsRequest(subject=SUBJECT, page_token=token),
        tokens=tokens,
        tenant="t",
    ).after == ("x", "1")
    with pytest.raises(GatewayError):
        listing(
            gateway.ListOffsiteRegistrationsRequest(subject=SUBJECT, page_token=token),
            tokens=tokens,
            tenant="another-tenant",
        )

"""GrantConsent validation under hypothesis: any input is accepted or refused field by field."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar._proto.yibao.gateway.v1 import common_pb2 as common
from sidecar._proto.yibao.gateway.v1 import consent_pb2 as consent
from sidecar.domain.validation import resident_id_check_char
from sidecar.errors import GatewayError
from sidecar.gateway import consent_validation as checks

NOW = 1_800_000_000_000_000
VALID = consent.GrantConsentRequest(
    request_id="r-1",
    subject=common.DataSubject(
        certificate_type=common.CERTIFICATE_TYPE_RESIDENT_ID_CARD,
        certificate_number="11010519491231002" + resident_id_check_char("11010519491231002"),
        name="张三",
    ),
    purpose=common.PURPOSE_SETTLEMENT,
    scope="结算",
    notice_version="v1",
    notice_sm3_hex="AB" * 32,
    channel_evidence="im-msg-1",
)


def refusal(request: consent.GrantConsentRequest) -> GatewayError | None:
    try:
        checks.grant_input(request, NOW)
    except GatewayError as error:
        return error
    return None


FIELDS = ("request_id", "scope", "notice_version", "notice_sm3_hex", "channel_evidence")


def test_the_valid_request_is_accepted_and_normalised() -> None:
    grant = checks.grant_input(VALID, NOW)
    assert grant.notice_sm3_hex == "ab" * 32
    assert grant.purpose == "PURPOSE_SETTLEMENT"
    assert grant.certificate_type == "CERTIFICATE_TYPE_RESIDENT_ID_CARD"
    assert grant.expire_time_us is None


@given(st.sampled_from(FIELDS), st.text(max_size=2100))
def test_any_text_in_one_field_is_accepted_or_named(field: str, value: str) -> None:
    request = consent.GrantConsentRequest()
    request.CopyFrom(VALID)
    setattr(request, field, value)
    error = refusal(request)
    if error is not None:
        assert error.reason == "INVALID_REQUEST"
        assert [v.field for v in error.violations] == [field]
        # the texts name the field and the rule; they never echo the value
        assert error.message == f"the request has invalid fields: {field}"
        assert error.violations[0].description in {
            "must not be empty",
            "must be 1-64 characters of A-Z, a-z, 0-9, '_' and '-'",
            "must be at most 2000 characters",
            "must be at most 64 characters",
            "must be at most 256 characters",
            "must not contain control characters",
            "must be 64 hex digits: the SM3 hash of the notice",
        }


@given(st.integers(min_value=-(2**62), max_value=2**62), st.integers(-(2**31), 2**31 - 1))
def test_any_expiry_is_accepted_only_when_valid_and_future(seconds: int, nanos: int) -> None:
    request = consent.GrantConsentRequest()
    request.CopyFrom(VALID)
    request.expire_time.seconds, request.expire_time.nanos = seconds, nanos
    in_range = -62_135_596_800 <= seconds <= 253_402_300_799 and 0 <= nanos < 10**9
    micros = seconds * 10**6 + nanos // 1000
    if in_range and micros > NOW:
        assert checks.grant_input(request, NOW).expire_time_us == micros
    else:
        with pytest.raises(GatewayError) as caught:
            checks.grant_input(request, NOW)
        assert [v.field for v in caught.value.violations] == ["expire_time"]


@given(st.one_of(st.text(max_size=200), st.binary(max_size=150).map(lambda b: b.hex())))
def test_any_forged_page_token_is_a_named_refusal_never_a_crash(token: str) -> None:
    from sidecar.gateway.consent import _cursor

    with pytest.raises(GatewayError) as caught:
        _cursor(token, "binding")
    assert [v.field for v in caught.value.violations] == ["page_token"]


def test_a_page_token_round_trips_only_with_its_binding() -> None:
    from sidecar.compliance.consent_ledger import Cursor
    from sidecar.gateway.consent import _cursor, _token

    token = _token(Cursor(123, "abc"), "binding-a")
    assert _cursor(token, "binding-a") == Cursor(123, "abc")
    with pytest.raises(GatewayError):
        _cursor(token, "binding-b")

"""Validation of ConsentService requests, collecting every bad field at once.

Each function returns a validated value object or raises ``INVALID_ARGUMENT`` with one
``FieldViolation`` per bad field. Descriptions name the rule, never the value.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf import timestamp_pb2

from sidecar import errors
from sidecar._proto.yibao.gateway.v1 import common_pb2 as common
from sidecar._proto.yibao.gateway.v1 import consent_pb2 as consent
from sidecar.compliance.consent_ledger import ConsentState
from sidecar.domain import validation
from sidecar.domain.subjects import Subject, check_subject
from sidecar.errors import FieldViolation

SCOPE_MAX = 2000
NOTICE_VERSION_MAX = 64
CHANNEL_EVIDENCE_MAX = 256
CONSENT_ID_MAX = 64
PAGE_SIZE_DEFAULT = 20
PAGE_SIZE_MAX = 100
_SM3_HEX = re.compile(r"[0-9A-Fa-f]{64}")
_CONSENT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# google.protobuf.Timestamp's range: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999999Z
_TIMESTAMP_SECONDS = (-62_135_596_800, 253_402_300_799)
_STATES = {
    consent.CONSENT_STATE_ACTIVE: ConsentState.ACTIVE,
    consent.CONSENT_STATE_REVOKED: ConsentState.REVOKED,
    consent.CONSENT_STATE_EXPIRED: ConsentState.EXPIRED,
}


@dataclass(frozen=True)
class GrantInput:
    request_id: str
    subject: Subject
    certificate_type: str  # the CertificateType value name
    purpose: str
    scope: str
    notice_version: str
    notice_sm3_hex: str  # lower case
    channel_evidence: str
    expire_time_us: int | None


@dataclass(frozen=True)
class RevokeInput:
    request_id: str
    consent_id: str | None  # exactly one of consent_id and (subject, purpose)
    subject: Subject | None
    certificate_type: str
    purpose: str


@dataclass(frozen=True)
class ListInput:
    subject: Subject
    certificate_type: str
    purpose: str | None
    states: tuple[ConsentState, ...]
    page_size: int
    page_token: str


def grant_input(request: consent.GrantConsentRequest, now_us: int) -> GrantInput:
    violations = _request_id(request.request_id)
    subject, subject_violations = check_subject(request.subject, request.HasField("subject"))
    violations += subject_violations
    purpose = _purpose(request.purpose, "purpose", violations, required=True)
    _text(request.scope, "scope", SCOPE_MAX, violations, multiline=True)
    _text(request.notice_version, "notice_version", NOTICE_VERSION_MAX, violations)
    if not _SM3_HEX.fullmatch(request.notice_sm3_hex):
        violations.append(
            FieldViolation("notice_sm3_hex", "must be 64 hex digits: the SM3 hash of the notice")
        )
    _text(request.channel_evidence, "channel_evidence", CHANNEL_EVIDENCE_MAX, violations)
    expire_us: int | None = None
    if request.HasField("expire_time"):
        expire_us = _future_time(request.expire_time, "expire_time", now_us, violations)
    if violations or subject is None or purpose is None:
        raise errors.invalid_request(violations)
    return GrantInput(
        request_id=request.request_id,
        subject=subject,
        certificate_type=common.CertificateType.Name(request.subject.certificate_type),
        purpose=purpose,
        scope=request.scope,
        notice_version=request.notice_version,
        notice_sm3_hex=request.notice_sm3_hex.lower(),
        channel_evidence=request.channel_evidence,
        expire_time_us=expire_us,
    )


def revoke_input(request: consent.RevokeConsentRequest) -> RevokeInput:
    violations = _request_id(request.request_id)
    target = request.WhichOneof("target")
    subject: Subject | None = None
    purpose: str | None = ""
    certificate_type = ""
    if target is None:
        violations.append(FieldViolation("target", "is required: consent_id or subject_purpose"))
    elif target == "consent_id":
        if not _CONSENT_ID.fullmatch(request.consent_id):
            violations.append(
                FieldViolation("consent_id", f"must be 1-{CONSENT_ID_MAX} of A-Z a-z 0-9 _ -")
            )
    else:
        pair = request.subject_purpose
        subject, subject_violations = check_subject(
            pair.subject, pair.HasField("subject"), "subject_purpose.subject"
        )
        violations += subject_violations
        purpose = _purpose(pair.purpose, "subject_purpose.purpose", violations, required=True)
        certificate_type = _certificate_type_name(pair.subject.certificate_type)
    if violations or purpose is None or target is None:
        raise errors.invalid_request(violations)
    return RevokeInput(
        request_id=request.request_id,
        consent_id=request.consent_id if target == "consent_id" else None,
        subject=subject,
        certificate_type=certificate_type,
        purpose=purpose,
    )


def list_input(request: consent.ListConsentsRequest) -> ListInput:
    subject, violations = check_subject(request.subject, request.HasField("subject"))
    purpose = _purpose(request.purpose, "purpose", violations, required=False)
    states: list[ConsentState] = []
    for index, value in enumerate(request.states):
        if value == consent.CONSENT_STATE_UNSPECIFIED:
            continue  # the enum's contract: ignored in list filters
        state = _STATES.get(value)
        if state is None:
            violations.append(FieldViolation(f"states[{index}]", "must be a known consent state"))
        else:
            states.append(state)
    if request.page_size < 0:
        violations.append(FieldViolation("page_size", "must not be negative"))
    if violations or subject is None or purpose is None:
        raise errors.invalid_request(violations)
    size = request.page_size or PAGE_SIZE_DEFAULT
    return ListInput(
        subject=subject,
        certificate_type=common.CertificateType.Name(request.subject.certificate_type),
        purpose=purpose or None,
        states=tuple(sorted(set(states), key=lambda s: s.value)),
        page_size=min(size, PAGE_SIZE_MAX),
        page_token=request.page_token,
    )


def _request_id(request_id: str) -> list[FieldViolation]:
    problem = validation.check_request_id(request_id)
    return [FieldViolation("request_id", problem)] if problem else []


def _purpose(
    value: common.Purpose.ValueType, field: str, violations: list[FieldViolation], *, required: bool
) -> str | None:
    """The purpose's value name; ``""`` for an allowed UNSPECIFIED; ``None`` if bad."""
    if value == common.PURPOSE_UNSPECIFIED:
        if required:
            violations.append(FieldViolation(field, "is required (not PURPOSE_UNSPECIFIED)"))
            return None
        return ""
    if value not in common.Purpose.values():
        violations.append(FieldViolation(field, "must be a known purpose"))
        return None
    return common.Purpose.Name(value)


def _certificate_type_name(value: common.CertificateType.ValueType) -> str:
    return common.CertificateType.Name(value) if value in common.CertificateType.values() else ""


def _text(
    value: str,
    field: str,
    limit: int,
    violations: list[FieldViolation],
    *,
    multiline: bool = False,
) -> None:
    allowed = "\n\t" if multiline else ""
    if not value.strip():
        violations.append(FieldViolation(field, "must not be empty"))
    elif len(value) > limit:
        violations.append(FieldViolation(field, f"must be at most {limit} characters"))
    elif any(unicodedata.category(ch) == "Cc" and ch not in allowed for ch in value):
        violations.append(FieldViolation(field, "must not contain control characters"))


def _future_time(
    value: timestamp_pb2.Timestamp, field: str, now_us: int, violations: list[FieldViolation]
) -> int | None:
    low, high = _TIMESTAMP_SECONDS
    if not low <= value.seconds <= high or not 0 <= value.nanos < 1_000_000_000:
        violations.append(FieldViolation(field, "must be a valid timestamp"))
        return None
    micros = value.seconds * 1_000_000 + value.nanos // 1000
    if micros <= now_us:
        violations.append(FieldViolation(field, "must be in the future"))
        return None
    return micros


def sorted_states(states: Sequence[ConsentState]) -> list[str]:
    """The state filter in a canonical order (for binding page tokens)."""
    return sorted(s.value for s in states)

"""异地就医备案 requests, validated: every bad field named at once, before anything is sent.

Submissions check the request id, subject, insurance type, target division code (GB/T 2260
province), dates (start not further in the past than the configured policy, end not before
start, end required for temporary travel and referrals), reason, contact phone, address, and the
hospital and diagnosis a referral needs. The insured area itself is known only after 1101; the
function refuses a target equal to it before sending 2501.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from sidecar import errors
from sidecar._proto.yibao.gateway.v1 import gateway_pb2 as gateway
from sidecar.domain import validation
from sidecar.domain.codes import INSURANCE_TYPE_CODES
from sidecar.domain.subjects import Subject, check_subject
from sidecar.errors import FieldViolation
from sidecar.gateway.offsite_store import RequestKey, request_key
from sidecar.gateway.paging import BadPageToken, PageTokens, binding_of, page_size_of

SUBMIT: Final = "SubmitOffsiteRegistration"
CANCEL: Final = "CancelOffsiteRegistration"
LIST: Final = "ListOffsiteRegistrations"

# OffsiteReason as the platform's registration type (refl_type; illustrative, regional
# dictionaries differ) and the wording sent as the reason (refl_rea).
REASONS: Final[Mapping[int, tuple[str, str]]] = {
    gateway.OFFSITE_REASON_LONG_TERM_RESIDENCE: ("1", "异地长期居住"),
    gateway.OFFSITE_REASON_RESIDENT_WORKING_ELSEWHERE: ("2", "常驻异地工作"),
    gateway.OFFSITE_REASON_REFERRAL: ("3", "异地转诊"),
    gateway.OFFSITE_REASON_TEMPORARY_TRAVEL: ("4", "临时外出就医"),
}
_REASON_BY_CODE = {code: reason for reason, (code, _) in REASONS.items()}
_REASON_BY_TEXT = {text: reason for reason, (_, text) in REASONS.items()}
_END_REQUIRED = frozenset(
    {gateway.OFFSITE_REASON_TEMPORARY_TRAVEL, gateway.OFFSITE_REASON_REFERRAL}
)
_PHONE = re.compile(r"[0-9+-]{1,20}")
_INSTITUTION = re.compile(r"[0-9A-Za-z]{12}")
_SERIAL = re.compile(r"[0-9A-Za-z_-]{1,30}")
ADDRESS_MAX = 200
CANCEL_REASON_MAX = 200


def reason_of(code: str, wording: str) -> gateway.OffsiteReason.ValueType:
    """The contract's reason for a registration type code (or, failing that, its wording)."""
    found = _REASON_BY_CODE.get(code) or _REASON_BY_TEXT.get(wording, 0)
    return gateway.OffsiteReason.ValueType(found)


@dataclass(frozen=True)
class Submission:
    key: RequestKey
    subject: Subject
    insurance_type_code: str
    target_division_code: str
    start: dt.date
    end: dt.date | None
    reason: int
    contact_phone: str
    address: str
    hospital_code: str
    hospital_name: str
    diagnosis_code: str
    diagnosis_name: str


@dataclass(frozen=True)
class Cancellation:
    key: RequestKey
    subject: Subject
    registration_id: str
    reason: str


@dataclass(frozen=True)
class Listing:
    subject: Subject
    states: frozenset[int]
    page_size: int
    after: tuple[str, str] | None  # sort key of the last registration of the previous page
    binding: bytes


def submission(
    request: gateway.SubmitOffsiteRegistrationRequest,
    *,
    tenant: str,
    today: dt.date,
    max_backdate_days: int,
) -> Submission:
    """The validated submission, or INVALID_ARGUMENT naming every bad field."""
    violations = _request_id(request.request_id)
    subject, subject_violations = check_subject(request.subject, request.HasField("subject"))
    violations += subject_violations
    insurance = INSURANCE_TYPE_CODES.get(request.insurance_type)
    if insurance is None:
        violations.append(FieldViolation("insurance_type", "must be a known insurance type"))
    division_problem = validation.check_division_code(request.target_division_code)
    if division_problem:
        violations.append(FieldViolation("target_division_code", division_problem))
    start = _date(request.start_date)
    earliest = today - dt.timedelta(days=max_backdate_days)
    if start is None:
        violations.append(FieldViolation("start_date", "must be a date YYYY-MM-DD"))
    elif start < earliest:
        policy = f"more than {max_backdate_days} days " if max_backdate_days else ""
        violations.append(FieldViolation("start_date", f"must not be {policy}in the past"))
    end: dt.date | None = None
    if request.end_date:
        end = _date(request.end_date)
        if end is None:
            violations.append(FieldViolation("end_date", "must be a date YYYY-MM-DD"))
        elif start is not None and end < start:
            violations.append(FieldViolation("end_date", "must not be before start_date"))
    elif request.reason in _END_REQUIRED:
        violations.append(FieldViolation("end_date", "is required for this reason"))
    if request.reason not in REASONS:
        violations.append(FieldViolation("reason", "must be a known reason"))
    if not _PHONE.fullmatch(request.contact_phone):
        violations.append(
            FieldViolation("contact_phone", "must be 1-20 characters of digits, '+' and '-'")
        )
    address_problem = _text_problem(request.address, ADDRESS_MAX, required=True)
    if address_problem:
        violations.append(FieldViolation("address", address_problem))
    referral = request.reason == gateway.OFFSITE_REASON_REFERRAL
    if request.HasField("hospital"):
        if not _INSTITUTION.fullmatch(request.hospital.code):
            violations.append(FieldViolation("hospital.code", "must be 12 letters or digits"))
        name_problem = _text_problem(request.hospital.name, 200, required=False)
        if name_problem:
            violations.append(FieldViolation("hospital.name", name_problem))
    elif referral:
        violations.append(FieldViolation("hospital", "is required for a referral"))
    if request.HasField("diagnosis"):
        code_problem = _text_problem(request.diagnosis.code, 30, required=True)
        if code_problem:
            violations.append(FieldViolation("diagnosis.code", code_problem))
        name_problem = _text_problem(request.diagnosis.name, 100, required=referral)
        if name_problem:
            violations.append(FieldViolation("diagnosis.name", name_problem))
    elif referral:
        violations.append(FieldViolation("diagnosis", "is required for a referral"))
    if violations or subject is None or insurance is None or start is None:
        raise errors.invalid_request(violations)
    return Submission(
        key=request_key(tenant, SUBMIT, request),
        subject=subject,
        insurance_type_code=insurance,
        target_division_code=request.target_division_code,
        start=start,
        end=end,
        reason=request.reason,
        contact_phone=request.contact_phone,
        address=request.address,
        hospital_code=request.hospital.code,
        hospital_name=request.hospital.name,
        diagnosis_code=request.diagnosis.code,
        diagnosis_name=request.diagnosis.name,
    )


def cancellation(request: gateway.CancelOffsiteRegistrationRequest, *, tenant: str) -> Cancellation:
    """The validated cancellation, or INVALID_ARGUMENT naming every bad field."""
    violations = _request_id(request.request_id)
    subject, subject_violations = check_subject(request.subject, request.HasField("subject"))
    violations += subject_violations
    if not _SERIAL.fullmatch(request.registration_id):
        violations.append(
            FieldViolation("registration_id", "must be 1-30 letters, digits, '_' or '-'")
        )
    reason_problem = _text_problem(request.reason, CANCEL_REASON_MAX, required=False)
    if reason_problem:
        violations.append(FieldViolation("reason", reason_problem))
    if violations or subject is None:
        raise errors.invalid_request(violations)
    return Cancellation(
        key=request_key(tenant, CANCEL, request),
        subject=subject,
        registration_id=request.registration_id,
        reason=request.reason,
    )


def listing(
    request: gateway.ListOffsiteRegistrationsRequest, *, tokens: PageTokens, tenant: str
) -> Listing:
    """The validated listing, or INVALID_ARGUMENT naming every bad field."""
    subject, violations = check_subject(request.subject, request.HasField("subject"))
    known = gateway.OffsiteRegistrationState.values()
    for index, state in enumerate(request.states):
        if state not in known:
            violations.append(FieldViolation(f"states[{index}]", "must be a known state"))
    size = page_size_of(request.page_size)
    if size is None:
        violations.append(FieldViolation("page_size", "must not be negative"))
    binding = binding_of(LIST, tenant, request)
    after: tuple[str, str] | None = None
    if request.page_token:
        try:
            position = tokens.open(request.page_token, binding)
            made, serial = position["t"], position["id"]
            if not isinstance(made, str) or not isinstance(serial, str):
                raise BadPageToken("malformed")
            after = (made, serial)
        except (BadPageToken, KeyError):
            violations.append(
                FieldViolation("page_token", "is not a token of this query (or has expired)")
            )
    if violations or subject is None or size is None:
        raise errors.invalid_request(violations)
    wanted = frozenset(
        s for s in request.states if s != gateway.OFFSITE_REGISTRATION_STATE_UNSPECIFIED
    )
    return Listing(subject, wanted, size, after, binding)


def _request_id(request_id: str) -> list[FieldViolation]:
    problem = validation.check_request_id(request_id)
    return [FieldViolation("request_id", problem)] if problem else []


def _text_problem(value: str, limit: int, *, required: bool) -> str | None:
    if not value.strip():
        return "must not be empty" if required else None
    if len(value) > limit:
        return f"must be at most {limit} characters"
    if any(not ch.isprintable() for ch in value):
        return "must not contain control characters"
    return None


def _date(value: str) -> dt.date | None:
    if validation.check_iso_date(value):
        return None
    return dt.date.fromisoformat(value)

"""电子凭证结算: SettleWithEVoucher, GetSettlement and CancelSettlement in the contract's terms.

Validates each request (every bad field at once), turns it into the state machine's terms
(:mod:`sidecar.settlement.machine`), and the machine's records into ``Settlement`` messages.
The idempotency digest is a *keyed* digest (``Pseudonymizer.digest``, the HSM's pseudonym
function) of the request's deterministic serialization without ``request_id``; the subject
digest is the subject's pseudonym. An unkeyed hash would give the ID number back by brute force.
Neither the e-voucher token nor the confirmation code is kept or logged.

The state machine knows no gRPC: its outcomes other than a record (``sidecar/settlement/
errors.py``) become the contract's statuses here, in :func:`_contract_errors`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import ROUND_HALF_UP, Decimal
from typing import Final, Literal

import grpc
from google.protobuf import timestamp_pb2

from sidecar import errors
from sidecar._proto.yibao.gateway.v1 import gateway_pb2 as gateway
from sidecar.compliance.pseudonyms import SETTLEMENT_PAYLOAD, Pseudonymizer
from sidecar.config import InstitutionConfig, SettlementConfig
from sidecar.deadlines import Deadline
from sidecar.domain import codes, validation
from sidecar.domain.subjects import Subject, check_subject
from sidecar.errors import FieldViolation, GatewayError
from sidecar.gateway.platform_errors import no_such_person, says
from sidecar.platform.client import Operator
from sidecar.settlement import errors as outcomes
from sidecar.settlement.chain import Confirmation, FeeLine, Order
from sidecar.settlement.machine import Claim, Settlements
from sidecar.settlement.records import Record, State
from sidecar.store import StoreUnavailable

ConfirmationKind = Literal["sms_code", "dynamic_token"]

MAX_FEE_ITEMS: Final = 500
_QUANTITY = re.compile(r"[0-9]{1,12}(\.[0-9]{1,4})?")
_CODE = re.compile(r"[0-9A-Za-z]{1,6}")
_INSTITUTION = re.compile(r"[0-9A-Za-z]{12}")
_TOKEN = re.compile(r"[\x21-\x7e]{1,50}")  # as scanned: printable ASCII, no spaces
_CONFIRMATION = re.compile(r"[0-9A-Za-z]{1,64}")

_STATES: Final = {
    State.RUNNING: gateway.SETTLEMENT_STATE_PENDING,
    State.SENDING: gateway.SETTLEMENT_STATE_PENDING,
    State.SETTLED: gateway.SETTLEMENT_STATE_SETTLED,
    State.CANCELLING: gateway.SETTLEMENT_STATE_SETTLED,  # until 2208 is answered
    State.FAILED: gateway.SETTLEMENT_STATE_FAILED,
    State.REVERSED: gateway.SETTLEMENT_STATE_REVERSED,
    State.CANCELLED: gateway.SETTLEMENT_STATE_CANCELLED,
}


class SettlementFunctions:
    """The three RPCs' work between validation and the state machine."""

    def __init__(
        self,
        settlements: Settlements,
        digests: Pseudonymizer,
        institution: InstitutionConfig,
        config: SettlementConfig,
        *,
        person_not_found: Sequence[str],
    ) -> None:
        self._settlements = settlements
        self._digests = digests
        self._institution = institution.code
        self._confirmation = _region_rule(config.second_confirmation, institution.division)
        self._person_not_found = tuple(person_not_found)  # platform.person_not_found_messages
        self._voucher_mismatch = config.voucher_mismatch_messages

    async def settle(
        self,
        request: gateway.SettleWithEVoucherRequest,
        tenant: str,
        operator: Operator,
        deadline: Deadline,
        *,
        pseudonym: str | None = None,
    ) -> gateway.SettleWithEVoucherResponse:
        """``pseudonym``: the subject's, if the consent gate computed it (``CallContext``)."""
        order = self.order(request)
        claim = Claim(
            tenant=tenant,
            request_id=request.request_id,
            payload_sha256=await payload_digest(self._digests, request),
            subject_sha256=pseudonym or await subject_digest(self._digests, order.subject),
            order=order,
        )
        with self._contract_errors():
            record = await self._settlements.settle(claim, operator, deadline)
        return gateway.SettleWithEVoucherResponse(settlement=settlement_message(record))

    async def get(
        self, request: gateway.GetSettlementRequest, tenant: str, *, pseudonym: str | None = None
    ) -> gateway.GetSettlementResponse:
        subject, violations = check_subject(request.subject, request.HasField("subject"))
        key = request.WhichOneof("key")
        violations += _key_violations(request, key)
        if violations or subject is None:
            raise errors.invalid_request(violations)
        with self._contract_errors():
            record = await self._settlements.get(
                tenant,
                pseudonym or await subject_digest(self._digests, subject),
                request_id=request.original_request_id if key == "original_request_id" else "",
                setl_id=request.settlement_id if key == "settlement_id" else "",
            )
        return gateway.GetSettlementResponse(settlement=settlement_message(record))

    async def cancel(
        self,
        request: gateway.CancelSettlementRequest,
        tenant: str,
        operator: Operator,
        deadline: Deadline,
        *,
        pseudonym: str | None = None,
    ) -> gateway.CancelSettlementResponse:
        subject, violations = check_subject(request.subject, request.HasField("subject"))
        problem = validation.check_request_id(request.request_id)
        if problem:
            violations.append(FieldViolation("request_id", problem))
        key = request.WhichOneof("key")
        violations += _key_violations(request, key)
        if len(request.reason) > 200:
            violations.append(FieldViolation("reason", "must be at most 200 characters"))
        if violations or subject is None:
            raise errors.invalid_request(violations)
        with self._contract_errors():
            record = await self._settlements.cancel(
                tenant,
                request.request_id,
                await payload_digest(self._digests, request),
                subject,
                pseudonym or await subject_digest(self._digests, subject),
                operator,
                deadline,
                original_request_id=(
                    request.original_request_id if key == "original_request_id" else ""
                ),
                setl_id=request.settlement_id if key == "settlement_id" else "",
            )
        return gateway.CancelSettlementResponse(settlement=settlement_message(record))

    @contextmanager
    def _contract_errors(self) -> Iterator[None]:
        """The machine's outcomes and store failures as the contract's statuses (docs/api.md)."""
        try:
            yield
        except StoreUnavailable:  # no 2207 leaves without the store
            raise GatewayError(
                grpc.StatusCode.UNAVAILABLE,
                "STORE_UNAVAILABLE",
                "the sidecar's settlement store is unavailable; repeat with the same request_id",
                retry_after_seconds=1.0,
            ) from None
        except outcomes.SettlementError as outcome:
            raise self._status_of(outcome) from None

    def _status_of(self, outcome: outcomes.SettlementError) -> GatewayError:
        match outcome:
            case outcomes.PersonRefused(refusal=refusal):
                if says(refusal, self._voucher_mismatch):
                    return errors.invalid_request(
                        [
                            FieldViolation(
                                "subject", "must be the holder of the e-voucher (ec_token)"
                            )
                        ]
                    )
                if says(refusal, self._person_not_found):
                    return no_such_person(refusal)
                return errors.platform_refused(str(refusal.infcode), refusal.err_msg)
            case outcomes.Refused(code=code, message=message):
                return errors.platform_refused(code, message)
            case outcomes.Unreachable(timed_out=True):
                return errors.platform_timeout("the insurance platform did not answer in time")
            case outcomes.Unreachable(detail=detail, retry_after=retry_after):
                return errors.platform_unavailable(
                    detail, retry_after_seconds=1.0 if retry_after is None else retry_after
                )
            case outcomes.Pending(timed_out=True):
                return errors.platform_timeout(
                    "the insurance platform did not answer the settlement in time; it is "
                    "PENDING and will be resolved: repeat with the same request_id"
                )
            case outcomes.Pending(retry_after=retry_after):
                return errors.platform_unavailable(
                    "the insurance platform's answer to the settlement was lost; it is PENDING "
                    "and will be resolved: repeat with the same request_id",
                    retry_after_seconds=retry_after,
                )
            case outcomes.KeyReused():
                return GatewayError(
                    grpc.StatusCode.ALREADY_EXISTS,
                    "IDEMPOTENCY_KEY_REUSED",
                    "request_id was used before with a different payload; use a new request_id",
                )
            case outcomes.InProgress():
                return GatewayError(
                    grpc.StatusCode.ABORTED,
                    "REQUEST_IN_PROGRESS",
                    "a call for this settlement is still running; repeat later",
                    retry_after_seconds=1.0,
                )
            case outcomes.NotFound():
                return GatewayError(
                    grpc.StatusCode.NOT_FOUND,
                    "SETTLEMENT_NOT_FOUND",
                    "no settlement with this key for this data subject",
                )
            case outcomes.Unrecorded():
                return GatewayError(
                    grpc.StatusCode.UNAVAILABLE,
                    "STORE_UNAVAILABLE",
                    "the insurance platform settled, but the sidecar's store stayed unavailable "
                    "until the deadline, so the settlement is PENDING and will be resolved (a "
                    "settlement that was not recorded is reversed with 2601): repeat with the "
                    "same request_id for its outcome",
                    retry_after_seconds=1.0,
                )
        return errors.internal()  # a new outcome without a status: fail closed

    def order(self, request: gateway.SettleWithEVoucherRequest) -> Order:
        """The validated order, or INVALID_ARGUMENT naming every bad field."""
        subject, violations = check_subject(request.subject, request.HasField("subject"))
        problem = validation.check_request_id(request.request_id)
        if problem:
            violations.append(FieldViolation("request_id", problem))
        if not _TOKEN.fullmatch(request.ec_token):
            violations.append(
                FieldViolation("ec_token", "is required: 1-50 printable characters as scanned")
            )
        insurance = codes.INSURANCE_TYPE_CODES.get(request.insurance_type)
        if insurance is None:
            violations.append(FieldViolation("insurance_type", "must be a known insurance type"))
        if not _CODE.fullmatch(request.medical_type_code):
            violations.append(FieldViolation("medical_type_code", "must be 1-6 letters or digits"))
        institution_problem = self._institution_problem(request.institution_code)
        for name, limit in (("department_code", 30), ("department_name", 100),
                            ("doctor_code", 30), ("doctor_name", 50)):  # fmt: skip
            value = getattr(request, name)
            if not value or len(value) > limit or not value.strip():
                violations.append(FieldViolation(name, f"is required, at most {limit} characters"))
        diagnosis = request.diagnosis
        if (
            not request.HasField("diagnosis")
            or not 0 < len(diagnosis.code) <= 30
            or not 0 < len(diagnosis.name) <= 300
        ):
            violations.append(
                FieldViolation("diagnosis", "is required: code 1-30, name 1-300 characters")
            )
        fees = _fee_lines(request, violations)
        confirmation = self._confirmation_of(request, violations)
        if violations or subject is None or insurance is None:
            raise errors.invalid_request(violations)
        if institution_problem is not None:
            raise institution_problem
        return Order(
            subject=subject,
            ec_token=request.ec_token,
            insurance_type_code=insurance,
            medical_type_code=request.medical_type_code,
            department_code=request.department_code,
            department_name=request.department_name,
            doctor_code=request.doctor_code,
            doctor_name=request.doctor_name,
            diagnosis_code=diagnosis.code,
            diagnosis_name=diagnosis.name,
            fees=fees,
            total_fen=request.total_fen,
            use_personal_account=request.use_personal_account,
            confirmation=confirmation,
        )

    def _institution_problem(self, code: str) -> GatewayError | None:
        if not code or code == self._institution:
            return None
        if not _INSTITUTION.fullmatch(code):
            return errors.invalid_request(
                [FieldViolation("institution_code", "must be 12 letters or digits")]
            )
        return GatewayError(
            grpc.StatusCode.PERMISSION_DENIED,
            "CALLER_NOT_ALLOWED",
            "this sidecar settles only as its configured institution",
        )

    def _confirmation_of(
        self, request: gateway.SettleWithEVoucherRequest, violations: list[FieldViolation]
    ) -> Confirmation | None:
        kind = request.WhichOneof("confirmation")
        if kind is None:
            return None
        value: str = getattr(request, kind)
        if not _CONFIRMATION.fullmatch(value):
            violations.append(FieldViolation(kind, "must be 1-64 letters or digits"))
            return None
        if self._confirmation is None:
            return None  # this region asks for none: nothing to forward
        if kind != self._confirmation:
            violations.append(
                FieldViolation(kind, f"this region confirms settlements with {self._confirmation}")
            )
            return None
        return Confirmation(field=kind, value=value)


def _fee_lines(
    request: gateway.SettleWithEVoucherRequest, violations: list[FieldViolation]
) -> tuple[FeeLine, ...]:
    items = request.fee_items
    if not 1 <= len(items) <= MAX_FEE_ITEMS:
        violations.append(FieldViolation("fee_items", f"must have 1-{MAX_FEE_ITEMS} items"))
    lines: list[FeeLine] = []
    total = 0
    for index, item in enumerate(items):
        path = f"fee_items[{index}]"
        bad = len(violations)
        if not 0 < len(item.item_code) <= 50:
            violations.append(FieldViolation(f"{path}.item_code", "is required, at most 50"))
        if not 0 < len(item.item_name) <= 100:
            violations.append(FieldViolation(f"{path}.item_name", "is required, at most 100"))
        quantity = Decimal(0)
        if _QUANTITY.fullmatch(item.quantity) and Decimal(item.quantity) > 0:
            quantity = Decimal(item.quantity)
        else:
            violations.append(
                FieldViolation(
                    f"{path}.quantity", "must be a decimal greater than 0 with at most 4 decimals"
                )
            )
        if item.unit_price_fen < 0:
            violations.append(FieldViolation(f"{path}.unit_price_fen", "must not be negative"))
        if len(violations) == bad:
            expected = (quantity * item.unit_price_fen).quantize(Decimal(1), ROUND_HALF_UP)
            if item.total_fen != int(expected):
                violations.append(
                    FieldViolation(
                        f"{path}.total_fen",
                        "must equal quantity x unit_price_fen, rounded half-up to the fen",
                    )
                )
            else:
                lines.append(
                    FeeLine(
                        code=item.item_code,
                        name=item.item_name,
                        quantity=quantity,
                        unit_price_fen=item.unit_price_fen,
                        total_fen=item.total_fen,
                    )
                )
        total += item.total_fen
    if request.total_fen <= 0 or request.total_fen != total:
        violations.append(
            FieldViolation("total_fen", "must be greater than 0 and equal the items' total_fen sum")
        )
    return tuple(lines)


def _key_violations(
    request: gateway.GetSettlementRequest | gateway.CancelSettlementRequest, key: str | None
) -> list[FieldViolation]:
    if key is None:
        return [FieldViolation("key", "name the settlement: original_request_id or settlement_id")]
    if key == "original_request_id":
        problem = validation.check_request_id(request.original_request_id)
        return [FieldViolation("original_request_id", problem)] if problem else []
    if not 0 < len(request.settlement_id) <= 30:
        return [FieldViolation("settlement_id", "must be 1-30 characters")]
    return []


def _region_rule(rules: Mapping[str, ConfirmationKind], division: str) -> ConfirmationKind | None:
    """The most specific rule for ``division``: its own code, its city (4), its province (2)."""
    for prefix in (division, division[:4], division[:2]):
        if prefix in rules:
            return rules[prefix]
    return None


async def payload_digest(
    digests: Pseudonymizer,
    message: gateway.SettleWithEVoucherRequest | gateway.CancelSettlementRequest,
) -> str:
    """Keyed digest of the request without its ``request_id``, deterministically serialized
    (stored in the historical column ``payload_sha256``)."""
    copy = type(message).FromString(message.SerializeToString())
    copy.request_id = ""
    domain = f"{SETTLEMENT_PAYLOAD}:{message.DESCRIPTOR.name}"
    return await digests.digest(domain, copy.SerializeToString(deterministic=True))


async def subject_digest(digests: Pseudonymizer, subject: Subject) -> str:
    """The subject's pseudonym (stored in the historical column ``subject_sha256``)."""
    return await digests.of(subject.certificate_type_code, subject.certificate_number)


def settlement_message(record: Record) -> gateway.Settlement:
    message = gateway.Settlement(
        settlement_id=record.setl_id or "",
        request_id=record.request_id,
        state=_STATES[record.state],
        insurance_type_code=record.insurance_type_code,
        insurance_type=codes.insurance_type(record.insurance_type_code),
        medical_type_code=record.medical_type_code,
        total_fen=record.total_fen,
    )
    message.institution.code = record.institution_code
    message.institution.name = record.institution_name
    if record.setl_id and record.state in (State.SETTLED, State.CANCELLING, State.CANCELLED):
        message.fund_paid_fen = record.fund_fen or 0
        message.account_paid_fen = record.account_fen or 0
        message.cash_paid_fen = record.cash_fen or 0
        message.other_paid_fen = record.other_fen or 0
        if record.balance_after_fen is not None:
            message.account_balance_after_fen = record.balance_after_fen
    else:
        message.settlement_id = ""
    if record.settle_time:
        message.settle_time.CopyFrom(_timestamp(record.settle_time))
    if record.cancel_time:
        message.cancel_time.CopyFrom(_timestamp(record.cancel_time))
    if record.state is State.FAILED:
        message.failure_message = record.failure_message or ""
    return message


def _timestamp(micros: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMicroseconds(micros)
    return stamp

"""The contract's RPCs as data: path, message types, read-only or not, default deadline.

Read-only comes from the proto (``option idempotency_level = NO_SIDE_EFFECTS``), never from a
list kept here, so a new RPC is classified by the contract itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from google.protobuf import descriptor_pb2
from google.protobuf.message import Message

from yibao_client.v1 import consent, gateway

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)

# docs/api.md, "Call metadata": at least 30 s for reads, 90 s for a settlement (a chain of
# platform transactions of up to 20 s each).
DEFAULT_TIMEOUT_SECONDS = 30.0
SETTLEMENT_TIMEOUT_SECONDS = 90.0


@dataclass(frozen=True)
class Rpc(Generic[Req, Resp]):
    service: str
    name: str
    request: type[Req]
    response: type[Resp]
    read_only: bool
    default_timeout: float

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"


def _rpc(service: str, name: str, request: type[Req], response: type[Resp]) -> Rpc[Req, Resp]:
    file = gateway.DESCRIPTOR if service == "InsuranceGateway" else consent.DESCRIPTOR
    method = file.services_by_name[service].methods_by_name[name]
    level = method.GetOptions().idempotency_level
    return Rpc(
        service=f"yibao.gateway.v1.{service}",
        name=name,
        request=request,
        response=response,
        read_only=level == descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS,
        default_timeout=(
            SETTLEMENT_TIMEOUT_SECONDS if name == "SettleWithEVoucher" else DEFAULT_TIMEOUT_SECONDS
        ),
    )


_G = "InsuranceGateway"
GET_ENROLLMENT = _rpc(
    _G, "GetEnrollment", gateway.GetEnrollmentRequest, gateway.GetEnrollmentResponse
)
GET_ACCOUNT = _rpc(_G, "GetAccount", gateway.GetAccountRequest, gateway.GetAccountResponse)
SUBMIT_OFFSITE_REGISTRATION = _rpc(
    _G,
    "SubmitOffsiteRegistration",
    gateway.SubmitOffsiteRegistrationRequest,
    gateway.SubmitOffsiteRegistrationResponse,
)
LIST_OFFSITE_REGISTRATIONS = _rpc(
    _G,
    "ListOffsiteRegistrations",
    gateway.ListOffsiteRegistrationsRequest,
    gateway.ListOffsiteRegistrationsResponse,
)
CANCEL_OFFSITE_REGISTRATION = _rpc(
    _G,
    "CancelOffsiteRegistration",
    gateway.CancelOffsiteRegistrationRequest,
    gateway.CancelOffsiteRegistrationResponse,
)
SETTLE_WITH_E_VOUCHER = _rpc(
    _G, "SettleWithEVoucher", gateway.SettleWithEVoucherRequest, gateway.SettleWithEVoucherResponse
)
GET_SETTLEMENT = _rpc(
    _G, "GetSettlement", gateway.GetSettlementRequest, gateway.GetSettlementResponse
)
CANCEL_SETTLEMENT = _rpc(
    _G, "CancelSettlement", gateway.CancelSettlementRequest, gateway.CancelSettlementResponse
)
CHECK_ELIGIBILITY = _rpc(
    _G, "CheckEligibility", gateway.CheckEligibilityRequest, gateway.CheckEligibilityResponse
)
_C = "ConsentService"
GRANT_CONSENT = _rpc(_C, "GrantConsent", consent.GrantConsentRequest, consent.GrantConsentResponse)
REVOKE_CONSENT = _rpc(
    _C, "RevokeConsent", consent.RevokeConsentRequest, consent.RevokeConsentResponse
)
LIST_CONSENTS = _rpc(_C, "ListConsents", consent.ListConsentsRequest, consent.ListConsentsResponse)

ALL: tuple[Rpc[Message, Message], ...] = (  # type: ignore[assignment]
    GET_ENROLLMENT,
    GET_ACCOUNT,
    SUBMIT_OFFSITE_REGISTRATION,
    LIST_OFFSITE_REGISTRATIONS,
    CANCEL_OFFSITE_REGISTRATION,
    SETTLE_WITH_E_VOUCHER,
    GET_SETTLEMENT,
    CANCEL_SETTLEMENT,
    CHECK_ELIGIBILITY,
    GRANT_CONSENT,
    REVOKE_CONSENT,
    LIST_CONSENTS,
)


def request_id_of(request: Message) -> str:
    """The request's idempotency key (``request_id``), or ``""`` for RPCs without one."""
    if "request_id" not in request.DESCRIPTOR.fields_by_name:
        return ""
    value = getattr(request, "request_id", "")
    return value if isinstance(value, str) else ""

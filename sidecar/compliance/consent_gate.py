"""The consent gate: no InsuranceGateway call goes on without the subject's live consent.

A filter of the chain (order set in sidecar/app.py). For each RPC of the gated service it reads the
method's ``required_purpose`` option from the service descriptor, pseudonymises the request's
data subject and asks the ledger, in the store and at this moment, for a live consent (granted,
not revoked, not expired) of the caller's tenant. Without one the call ends here with
``FAILED_PRECONDITION`` / ``CONSENT_REQUIRED`` and the purpose's name, before the servicer runs,
so nothing reaches the platform, and an RPC that is not built yet is gated all the same. When the
store cannot answer the gate fails closed: ``UNAVAILABLE`` / ``STORE_UNAVAILABLE``.

A request whose subject is missing or malformed is passed on untouched: there is nothing to look
up, and the servicer refuses it with every bad field named (its functions only accept a
validated subject, so nothing can reach the platform either way).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message

from sidecar import errors
from sidecar._proto.yibao.gateway.v1 import common_pb2 as common
from sidecar._proto.yibao.gateway.v1 import gateway_pb2 as gateway
from sidecar.compliance.consent_ledger import ConsentLedger
from sidecar.compliance.pseudonyms import Pseudonymizer
from sidecar.domain.subjects import Subject, check_subject
from sidecar.interceptors.caller import caller_of
from sidecar.interceptors.chain import Call, Proceed
from sidecar.store import StoreError

RETRY_AFTER_SECONDS = 1.0


class SubjectCache(Protocol):
    """The read cache of answers about people (sidecar/gateway/cache.py ``ReadCache``).

    The gate runs before any cached answer could be served, so a revoked subject's answers are
    refused anyway; dropping them keeps a re-granted consent from meeting answers read before.
    """

    def invalidate(self, subject: Subject) -> object:
        """Drop every cached answer about this subject."""
        ...

    def clear(self) -> None:
        """Drop everything (a revocation by consent id: the ledger holds no number to name)."""
        ...


def required_purposes(service: ServiceDescriptor) -> Mapping[str, str]:
    """``/package.Service/Method`` → the ``Purpose`` value name of the method's option.

    Raises ``ValueError`` if a method declares no purpose: the gate would have nothing to check.
    """
    purposes: dict[str, str] = {}
    for method in service.methods:
        value = method.GetOptions().Extensions[gateway.required_purpose]
        if value == common.PURPOSE_UNSPECIFIED:
            raise ValueError(f"{method.full_name} declares no required_purpose")
        purposes[f"/{service.full_name}/{method.name}"] = common.Purpose.Name(value)
    return purposes


def consent_required(purpose: str) -> errors.GatewayError:
    return errors.GatewayError(
        grpc.StatusCode.FAILED_PRECONDITION,
        "CONSENT_REQUIRED",
        f"the data subject has no active consent for {purpose}; call GrantConsent first",
        metadata={"purpose": purpose},
    )


def consent_unavailable() -> errors.GatewayError:
    return errors.GatewayError(
        grpc.StatusCode.UNAVAILABLE,
        "STORE_UNAVAILABLE",
        "the consent ledger cannot be reached; nothing was sent to the platform",
        retry_after_seconds=RETRY_AFTER_SECONDS,
    )


class ConsentGate:
    """Filter: refuses calls of ``service`` without a live consent for the method's purpose."""

    def __init__(
        self,
        ledger: ConsentLedger,
        pseudonymizer: Pseudonymizer,
        service: ServiceDescriptor = gateway.DESCRIPTOR.services_by_name["InsuranceGateway"],
    ) -> None:
        self._ledger = ledger
        self._pseudonymizer = pseudonymizer
        self._service = service.full_name
        self._purposes = required_purposes(service)

    async def __call__(self, call: Call, request: Message, proceed: Proceed) -> Message:
        if call.service != self._service:
            return await proceed(request)
        purpose = self._purposes.get(call.method)
        if purpose is None:  # a method the descriptor does not know: fail closed
            raise errors.internal()
        has_subject = request.HasField("subject")
        subject, _ = check_subject(getattr(request, "subject"), has_subject)  # noqa: B009
        if subject is None:
            return await proceed(request)
        pseudonym = await self._pseudonymizer.of(
            subject.certificate_type_code, subject.certificate_number
        )
        tenant = caller_of(call).tenant
        try:
            active = await self._ledger.is_active(tenant, pseudonym, purpose)
        except StoreError:
            raise consent_unavailable() from None
        if not active:
            raise consent_required(purpose)
        call.subject_pseudonym = pseudonym  # the servicer's, in its CallContext
        call.subject = subject  # validated here: the servicer does not validate it again
        return await proceed(request)

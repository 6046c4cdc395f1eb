"""The typed clients: one method per RPC, call metadata, deadlines, typed errors, safe retries.

``Client`` is synchronous, ``AsyncClient`` the same on ``grpc.aio``; open them with
:mod:`yibao_client.channels` (``connect_unix``, ``connect_tls`` and their ``_async`` twins).
Every call carries ``x-yibao-tenant`` and ``x-yibao-operator`` (set per client, or per call), and
``traceparent``/``tracestate`` when given. Every call has a deadline: ``timeout=`` per call, else
the RPC's default (30 s; 90 s for SettleWithEVoucher). A failed call raises a
:class:`~yibao_client.errors.SidecarError` subclass; retry-safe failures are repeated first
(:mod:`yibao_client.retry`), with the same request and so the same ``request_id``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypedDict, TypeVar, Unpack

import grpc
import grpc.aio
from google.protobuf.message import Message

from yibao_client import rpcs
from yibao_client.errors import SidecarError, from_rpc_error
from yibao_client.retry import RetryPolicy, next_delay
from yibao_client.rpcs import Rpc
from yibao_client.v1 import consent, gateway

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)


class CallOptions(TypedDict, total=False):
    """Per-call settings; each overrides the client's own."""

    timeout: float  # seconds for the whole call, retries included
    tenant: str
    operator: str
    traceparent: str
    tracestate: str


@dataclass(frozen=True)
class CallerIdentity:
    """The call metadata of docs/api.md section 2 (never personal data: handles, not names)."""

    tenant: str
    operator: str
    traceparent: str = ""
    tracestate: str = ""

    def metadata(self, options: CallOptions) -> tuple[tuple[str, str], ...]:
        merged = replace(
            self,
            tenant=options.get("tenant", self.tenant),
            operator=options.get("operator", self.operator),
            traceparent=options.get("traceparent", self.traceparent),
            tracestate=options.get("tracestate", self.tracestate),
        )
        pairs = [("x-yibao-tenant", merged.tenant), ("x-yibao-operator", merged.operator)]
        if merged.traceparent:
            pairs.append(("traceparent", merged.traceparent))
            if merged.tracestate:
                pairs.append(("tracestate", merged.tracestate))
        return tuple(pairs)


def _timeout(rpc: Rpc[Any, Any], options: CallOptions) -> float:
    timeout = options.get("timeout", rpc.default_timeout)
    if not timeout > 0:
        raise ValueError("timeout must be a positive number of seconds")
    return timeout


@dataclass(frozen=True)
class _Attempts:
    """One call's deadline, metadata and retry decision, shared by both clients' loops."""

    rpc: Rpc[Any, Any]
    metadata: tuple[tuple[str, str], ...]
    request_id: str
    deadline: float
    retry: RetryPolicy
    clock: Callable[[], float]

    @classmethod
    def plan(
        cls,
        rpc: Rpc[Any, Any],
        request: Message,
        options: CallOptions,
        caller: CallerIdentity,
        retry: RetryPolicy,
        clock: Callable[[], float],
    ) -> _Attempts:
        if not isinstance(request, rpc.request):
            raise TypeError(f"{rpc.name} takes a {rpc.request.__name__}")
        return cls(
            rpc=rpc,
            metadata=caller.metadata(options),
            request_id=rpcs.request_id_of(request),
            deadline=clock() + _timeout(rpc, options),
            retry=retry,
            clock=clock,
        )

    def timeout(self) -> float:
        """What is left of the deadline for the next attempt."""
        return max(self.deadline - self.clock(), 0.001)

    def delay_after(self, failure: grpc.RpcError, attempt: int) -> float:
        """Seconds to wait before the next attempt; raises the typed error if there is none."""
        error = from_rpc_error(failure, method=self.rpc.path, attempts=attempt)
        delay = next_delay(
            self.retry,
            error,
            attempt=attempt,
            read_only=self.rpc.read_only,
            request_id=self.request_id,
            remaining=self.deadline - self.clock(),
        )
        if delay is None:
            raise error from failure
        return delay


class Client:
    """Synchronous client of InsuranceGateway and ConsentService over one channel."""

    def __init__(
        self,
        channel: grpc.Channel,
        caller: CallerIdentity,
        retry: RetryPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.channel = channel
        self.caller = caller
        self.retry = retry or RetryPolicy()
        self._clock = clock
        self._sleep = sleep
        self._stubs: dict[str, grpc.UnaryUnaryMultiCallable[Any, Any]] = {}

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def call(self, rpc: Rpc[Req, Resp], request: Req, options: CallOptions) -> Resp:
        """One RPC with deadline and retries; the typed methods below all come here."""
        attempts = _Attempts.plan(rpc, request, options, self.caller, self.retry, self._clock)
        stub = self._stubs.get(rpc.path)
        if stub is None:
            stub = self._stubs[rpc.path] = self.channel.unary_unary(
                rpc.path,
                request_serializer=rpc.request.SerializeToString,
                response_deserializer=rpc.response.FromString,
            )
        attempt = 0
        while True:
            attempt += 1
            try:
                answer: Resp = stub(request, timeout=attempts.timeout(), metadata=attempts.metadata)
                return answer
            except grpc.RpcError as failure:
                self._sleep(attempts.delay_after(failure, attempt))

    # InsuranceGateway
    def get_enrollment(
        self, request: gateway.GetEnrollmentRequest, **options: Unpack[CallOptions]
    ) -> gateway.GetEnrollmentResponse:
        return self.call(rpcs.GET_ENROLLMENT, request, options)

    def get_account(
        self, request: gateway.GetAccountRequest, **options: Unpack[CallOptions]
    ) -> gateway.GetAccountResponse:
        return self.call(rpcs.GET_ACCOUNT, request, options)

    def submit_offsite_registration(
        self, request: gateway.SubmitOffsiteRegistrationRequest, **options: Unpack[CallOptions]
    ) -> gateway.SubmitOffsiteRegistrationResponse:
        return self.call(rpcs.SUBMIT_OFFSITE_REGISTRATION, request, options)

    def list_offsite_registrations(
        self, request: gateway.ListOffsiteRegistrationsRequest, **options: Unpack[CallOptions]
    ) -> gateway.ListOffsiteRegistrationsResponse:
        return self.call(rpcs.LIST_OFFSITE_REGISTRATIONS, request, options)

    def cancel_offsite_registration(
        self, request: gateway.CancelOffsiteRegistrationRequest, **options: Unpack[CallOptions]
    ) -> gateway.CancelOffsiteRegistrationResponse:
        return self.call(rpcs.CANCEL_OFFSITE_REGISTRATION, request, options)

    def settle_with_e_voucher(
        self, request: gateway.SettleWithEVoucherRequest, **options: Unpack[CallOptions]
    ) -> gateway.SettleWithEVoucherResponse:
        return self.call(rpcs.SETTLE_WITH_E_VOUCHER, request, options)

    def get_settlement(
        self, request: gateway.GetSettlementRequest, **options: Unpack[CallOptions]
    ) -> gateway.GetSettlementResponse:
        return self.call(rpcs.GET_SETTLEMENT, request, options)

    def cancel_settlement(
        self, request: gateway.CancelSettlementRequest, **options: Unpack[CallOptions]
    ) -> gateway.CancelSettlementResponse:
        return self.call(rpcs.CANCEL_SETTLEMENT, request, options)

    def check_eligibility(
        self, request: gateway.CheckEligibilityRequest, **options: Unpack[CallOptions]
    ) -> gateway.CheckEligibilityResponse:
        return self.call(rpcs.CHECK_ELIGIBILITY, request, options)

    # ConsentService
    def grant_consent(
        self, request: consent.GrantConsentRequest, **options: Unpack[CallOptions]
    ) -> consent.GrantConsentResponse:
        return self.call(rpcs.GRANT_CONSENT, request, options)

    def revoke_consent(
        self, request: consent.RevokeConsentRequest, **options: Unpack[CallOptions]
    ) -> consent.RevokeConsentResponse:
        return self.call(rpcs.REVOKE_CONSENT, request, options)

    def list_consents(
        self, request: consent.ListConsentsRequest, **options: Unpack[CallOptions]
    ) -> consent.ListConsentsResponse:
        return self.call(rpcs.LIST_CONSENTS, request, options)


class AsyncClient:
    """The same client on ``grpc.aio``: every method is a coroutine."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        caller: CallerIdentity,
        retry: RetryPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.channel = channel
        self.caller = caller
        self.retry = retry or RetryPolicy()
        self._clock = clock
        self._stubs: dict[str, grpc.aio.UnaryUnaryMultiCallable[Any, Any]] = {}

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close(None)

    async def call(self, rpc: Rpc[Req, Resp], request: Req, options: CallOptions) -> Resp:
        """One RPC with deadline and retries; the typed methods below all come here."""
        attempts = _Attempts.plan(rpc, request, options, self.caller, self.retry, self._clock)
        stub = self._stubs.get(rpc.path)
        if stub is None:
            stub = self._stubs[rpc.path] = self.channel.unary_unary(
                rpc.path,
                request_serializer=rpc.request.SerializeToString,
                response_deserializer=rpc.response.FromString,
            )
        attempt = 0
        while True:
            attempt += 1
            try:
                answer: Resp = await stub(
                    request, timeout=attempts.timeout(), metadata=attempts.metadata
                )
                return answer
            except grpc.RpcError as failure:
                await asyncio.sleep(attempts.delay_after(failure, attempt))

    # InsuranceGateway
    async def get_enrollment(
        self, request: gateway.GetEnrollmentRequest, **options: Unpack[CallOptions]
    ) -> gateway.GetEnrollmentResponse:
        return await self.call(rpcs.GET_ENROLLMENT, request, options)

    async def get_account(
        self, request: gateway.GetAccountRequest, **options: Unpack[CallOptions]
    ) -> gateway.GetAccountResponse:
        return await self.call(rpcs.GET_ACCOUNT, request, options)

    async def submit_offsite_registration(
        self, request: gateway.SubmitOffsiteRegistrationRequest, **options: Unpack[CallOptions]
    ) -> gateway.SubmitOffsiteRegistrationResponse:
        return await self.call(rpcs.SUBMIT_OFFSITE_REGISTRATION, request, options)

    async def list_offsite_registrations(
        self, request: gateway.ListOffsiteRegistrationsRequest, **options: Unpack[CallOptions]
    ) -> gateway.ListOffsiteRegistrationsResponse:
        return await self.call(rpcs.LIST_OFFSITE_REGISTRATIONS, request, options)

    async def cancel_offsite_registration(
        self, request: gateway.CancelOffsiteRegistrationRequest, **options: Unpack[CallOptions]
    ) -> gateway.CancelOffsiteRegistrationResponse:
        return await self.call(rpcs.CANCEL_OFFSITE_REGISTRATION, request, options)

    async def settle_with_e_voucher(
        self, request: gateway.SettleWithEVoucherRequest, **options: Unpack[CallOptions]
    ) -> gateway.SettleWithEVoucherResponse:
        return await self.call(rpcs.SETTLE_WITH_E_VOUCHER, request, options)

    async def get_settlement(
        self, request: gateway.GetSettlementRequest, **options: Unpack[CallOptions]
    ) -> gateway.GetSettlementResponse:
        return await self.call(rpcs.GET_SETTLEMENT, request, options)

    async def cancel_settlement(
        self, request: gateway.CancelSettlementRequest, **options: Unpack[CallOptions]
    ) -> gateway.CancelSettlementResponse:
        return await self.call(rpcs.CANCEL_SETTLEMENT, request, options)

    async def check_eligibility(
        self, request: gateway.CheckEligibilityRequest, **options: Unpack[CallOptions]
    ) -> gateway.CheckEligibilityResponse:
        return await self.call(rpcs.CHECK_ELIGIBILITY, request, options)

    # ConsentService
    async def grant_consent(
        self, request: consent.GrantConsentRequest, **options: Unpack[CallOptions]
    ) -> consent.GrantConsentResponse:
        return await self.call(rpcs.GRANT_CONSENT, request, options)

    async def revoke_consent(
        self, request: consent.RevokeConsentRequest, **options: Unpack[CallOptions]
    ) -> consent.RevokeConsentResponse:
        return await self.call(rpcs.REVOKE_CONSENT, request, options)

    async def list_consents(
        self, request: consent.ListConsentsRequest, **options: Unpack[CallOptions]
    ) -> consent.ListConsentsResponse:
        return await self.call(rpcs.LIST_CONSENTS, request, options)


__all__ = ["AsyncClient", "CallOptions", "CallerIdentity", "Client", "SidecarError"]

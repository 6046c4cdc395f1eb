"""Guards: the calling workload's identity, its permissions and its rates, before anything else.

Two guards of one ``AccessControl``: ``workload`` runs first among the refusing guards (before
caller identification, before the request is decoded), so a peer the policy does not know is
refused with ``PEER_UNAUTHENTICATED`` whatever its metadata or its request bytes; it also checks
the RPC. ``tenant`` runs after ``CallerIdentity`` (which establishes the tenant and operator from
metadata) and checks the tenant and the rates, before any filter or service that could contact the
platform. The workload identity is what the transport proved (``sidecar/access/peer.py``); the
policy in force decides (``policy.py``); the limits count (``ratelimit.py``). The outcome, allowed
or refused, is left on the call as ``call.access`` (an ``AccessDecision``) for the access log, the
audit trail and the servicer: the caller's policy name and the refusal reason, never personal
data.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Protocol

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.message import Message

from sidecar import errors
from sidecar.access.peer import Peer, UnixPeerLookup, identify
from sidecar.access.policy import Policy, Rule
from sidecar.access.ratelimit import Limit, RateLimiter
from sidecar.errors import GatewayError
from sidecar.interceptors.caller import caller_of
from sidecar.interceptors.chain import Call, Continue
from sidecar.interceptors.context import AccessDecision

PEER_UNAUTHENTICATED = "PEER_UNAUTHENTICATED"
RPC_NOT_ALLOWED = "RPC_NOT_ALLOWED"
TENANT_NOT_ALLOWED = "TENANT_NOT_ALLOWED"
RATE_LIMITED = "RATE_LIMITED"


class PolicySource(Protocol):
    def current(self) -> Policy: ...


class AccessControl:
    """Guards: refuse unknown workloads, RPCs and tenants they may not use, and excess rates."""

    def __init__(self, policy: PolicySource, unix: UnixPeerLookup, limiter: RateLimiter) -> None:
        self._policy = policy
        self._unix = unix
        self._limiter = limiter
        # the policy's rule for the peer, from ``workload`` to ``tenant`` of the same call
        self._rules: weakref.WeakKeyDictionary[Call, Rule] = weakref.WeakKeyDictionary()

    async def workload(self, call: Call, proceed: Continue) -> Message:
        """Guard: the peer must be a caller of the policy, allowed to use this RPC."""
        peer = identify(call.context, self._unix)
        transport = peer.kind if peer is not None else "none"
        rule = self._policy.current().caller_for(peer) if peer is not None else None
        if rule is None:
            raise _refuse(call, "", transport, _unauthenticated(peer))
        if not rule.allows_rpc(call.service, call.rpc):
            raise _refuse(
                call,
                rule.name,
                transport,
                GatewayError(
                    grpc.StatusCode.PERMISSION_DENIED,
                    RPC_NOT_ALLOWED,
                    f"caller {rule.name} may not use {call.rpc}",
                    metadata={"caller": rule.name},
                ),
            )
        self._rules[call] = rule
        call.access = AccessDecision(caller=rule.name, transport=transport)
        return await proceed()

    async def tenant(self, call: Call, proceed: Continue) -> Message:
        """Guard (after ``CallerIdentity``): the tenant must be allowed, the rates not exceeded."""
        rule = self._rules.pop(call, None)
        decision = call.access
        if rule is None or decision is None:
            raise errors.internal()  # the workload guard did not run: fail closed
        transport = decision.transport
        caller = caller_of(call)
        if not rule.allows_tenant(caller.tenant):
            raise _refuse(
                call,
                rule.name,
                transport,
                GatewayError(
                    grpc.StatusCode.PERMISSION_DENIED,
                    TENANT_NOT_ALLOWED,
                    f"caller {rule.name} may not act for this tenant",
                    metadata={"caller": rule.name},
                ),
            )
        limits = []
        if rule.tenant_rate is not None:
            limits.append(Limit("tenant", rule.tenant_rate, (rule.name, caller.tenant)))
        if rule.operator_rate is not None:
            limits.append(
                Limit("operator", rule.operator_rate, (rule.name, caller.tenant, caller.operator))
            )
        refusal = self._limiter.admit(limits)
        if refusal is not None:
            raise _refuse(
                call,
                rule.name,
                transport,
                GatewayError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    RATE_LIMITED,
                    f"the {refusal.scope} call rate of caller {rule.name} is exceeded",
                    metadata={"limit": refusal.scope},
                    retry_after_seconds=max(refusal.retry_after_seconds, 0.001),
                ),
            )
        return await proceed()


def _unauthenticated(peer: Peer | None) -> GatewayError:
    who = peer.describe() if peer is not None else "a connection without a proven identity"
    return GatewayError(
        grpc.StatusCode.UNAUTHENTICATED,
        PEER_UNAUTHENTICATED,
        f"{who} is not a caller in the sidecar's access policy",
    )


def _refuse(call: Call, caller: str, transport: str, error: GatewayError) -> GatewayError:
    call.access = AccessDecision(caller, transport, refusal=error.reason)
    return error


def rpc_names(services: Iterable[str]) -> frozenset[str]:
    """``Service/Method`` of every method of the named (registered) services."""
    pool = descriptor_pool.Default()
    return frozenset(
        f"{name.rsplit('.', 1)[-1]}/{method.name}"
        for name in services
        for method in pool.FindServiceByName(name).methods
    )

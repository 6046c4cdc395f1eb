"""The typed context of one call: what the filter chain established, handed to the servicer.

The chain fills a ``Call`` as the call passes its guards and filters (each field set by the one
filter whose job it is: the caller by ``CallerIdentity``, the access decision by access control,
the trace ID by tracing, the subject's pseudonym by the consent gate) and hands the servicer a
frozen :class:`CallContext` made from it, as the second argument of every servicer method in
place of gRPC's context. Nothing travels in a context variable or an untyped dictionary.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from sidecar import errors
from sidecar.deadlines import Deadline
from sidecar.domain.subjects import Subject

_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")
TRACEPARENT_KEY = "traceparent"


@dataclass(frozen=True)
class Caller:
    """The business caller from metadata: opaque handles, never personal data."""

    tenant: str
    operator: str


@dataclass(frozen=True)
class AccessDecision:
    """What access control decided for one call (read by the access log and the audit filter)."""

    caller: str  # the policy's caller name; "" when the peer is no known caller
    transport: str  # "unix", "tls" or "none": how the identity was proved
    refusal: str = ""  # the ErrorInfo reason when refused, "" when allowed


@dataclass(frozen=True)
class CallContext:
    """One call as the chain established it, for the servicer.

    ``caller`` is ``None`` only in a chain without ``CallerIdentity``; :attr:`identified` refuses
    such a call. ``subject_pseudonym`` is the consent gate's pseudonym of the request's data
    subject and ``subject`` that subject as the gate validated it (both ``None`` outside the gated
    service or without a valid subject): the servicer validates the subject only when the gate
    did not, so a request's subject is checked once.
    """

    method: str  # "/yibao.gateway.v1.InsuranceGateway/GetEnrollment"
    deadline: Deadline
    trace_id: str = ""
    caller: Caller | None = None
    access: AccessDecision | None = None
    subject_pseudonym: str | None = None
    subject: Subject | None = None

    @property
    def identified(self) -> Caller:
        """The caller, or UNAUTHENTICATED if no guard established one (fail closed)."""
        if self.caller is None:
            raise errors.unauthenticated("no caller identity")
        return self.caller

    @property
    def rpc(self) -> str:
        return self.method.rsplit("/", 1)[-1]


def traceparent_trace_id(metadata: Mapping[str, str]) -> str:
    """The trace ID of a well-formed W3C ``traceparent`` header, else ``""``."""
    match = _TRACEPARENT.fullmatch(metadata.get(TRACEPARENT_KEY, ""))
    return match.group(1) if match else ""

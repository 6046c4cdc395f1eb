"""Establishes who is calling from the request metadata, or refuses with UNAUTHENTICATED.

The IM service names the tenant (``x-yibao-tenant``) and the operator acting for the employee
(``x-yibao-operator``) on every call. Identity of the calling *workload* (peer credentials, mTLS)
is the access-control filter's job; this filter only establishes the business caller.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from google.protobuf.message import Message

from sidecar import errors
from sidecar.interceptors.chain import Call, Proceed

TENANT_KEY = "x-yibao-tenant"
OPERATOR_KEY = "x-yibao-operator"
_TENANT = re.compile(r"[A-Za-z0-9._-]{1,64}")
_OPERATOR = re.compile(r"[A-Za-z0-9._@-]{1,30}")  # the envelope's opter holds 30 characters


@dataclass(frozen=True)
class Caller:
    tenant: str
    operator: str


class CallerIdentity:
    """Filter: sets ``call.attributes["caller"]`` from metadata."""

    async def __call__(self, call: Call, request: Message, proceed: Proceed) -> Message:
        tenant = call.metadata.get(TENANT_KEY, "")
        operator = call.metadata.get(OPERATOR_KEY, "")
        missing = [
            key for key, value in ((TENANT_KEY, tenant), (OPERATOR_KEY, operator)) if not value
        ]
        if missing:
            raise errors.unauthenticated(
                f"missing caller metadata: {', '.join(missing)}", header=missing[0]
            )
        if not _TENANT.fullmatch(tenant):
            raise errors.unauthenticated(
                f"{TENANT_KEY} must be 1-64 characters of A-Z a-z 0-9 . _ -", header=TENANT_KEY
            )
        if not _OPERATOR.fullmatch(operator):
            raise errors.unauthenticated(
                f"{OPERATOR_KEY} must be 1-30 characters of A-Z a-z 0-9 . _ @ -",
                header=OPERATOR_KEY,
            )
        call.attributes["caller"] = Caller(tenant=tenant, operator=operator)
        return await proceed(request)


def caller_of(call: Call) -> Caller:
    caller = call.attributes.get("caller")
    if not isinstance(caller, Caller):
        raise errors.unauthenticated("no caller identity")
    return caller

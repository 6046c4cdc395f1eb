"""Establishes who is calling from the request metadata, or refuses with UNAUTHENTICATED.

The IM service names the tenant (``x-yibao-tenant``) and the operator acting for the employee
(``x-yibao-operator``) on every call. Identity of the calling *workload* (peer credentials, mTLS)
is the access-control filter's job; this filter only establishes the business caller.

Both values are opaque handles, and they end up in the audit trail, the consent ledger and the
access log in plaintext, so they must never be personal data: a value with a run of 11 or more
digits (a mobile phone number, a resident ID number, a bank card), even split by ``.``, ``_`` or
``-``, is refused like a malformed one, and so is anything outside the handle alphabet (names in
any script, e-mail addresses, spaces). A refused value is never echoed: not in the status, not in
the log, not in the trail (the audit filter records it as empty, using :func:`well_formed`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from google.protobuf.message import Message

from sidecar import errors
from sidecar.interceptors.chain import Call, Continue
from sidecar.interceptors.context import Caller

TENANT_KEY = "x-yibao-tenant"
OPERATOR_KEY = "x-yibao-operator"
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_OPERATOR = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,29}")  # the envelope's opter: 30 characters
_RULES = {
    TENANT_KEY: (_TENANT, "1-64 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit"),
    OPERATOR_KEY: (
        _OPERATOR,
        "1-30 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit",
    ),
}
_SEPARATORS = re.compile(r"[._-]")
_LONG_NUMBER = re.compile(r"[0-9]{11,}")  # mobile (11), resident ID (15, 17 + check), cards


def problem(key: str, value: str) -> str | None:
    """Why ``value`` is not acceptable for metadata ``key`` (never quoting it), or ``None``."""
    if not value:
        return f"missing caller metadata: {key}"
    pattern, rule = _RULES[key]
    if not pattern.fullmatch(value):
        return f"{key} must be {rule}"
    if _LONG_NUMBER.search(_SEPARATORS.sub("", value)):
        return (
            f"{key} must be an opaque handle, not personal data: it holds a run of 11 or more "
            "digits (a phone, ID or card number?)"
        )
    return None


def well_formed(metadata: Mapping[str, str]) -> Caller:
    """The tenant and operator of ``metadata``, each ``""`` where it is not acceptable."""
    tenant, operator = metadata.get(TENANT_KEY, ""), metadata.get(OPERATOR_KEY, "")
    return Caller(
        tenant=tenant if problem(TENANT_KEY, tenant) is None else "",
        operator=operator if problem(OPERATOR_KEY, operator) is None else "",
    )


class CallerIdentity:
    """Guard: sets ``call.caller`` from metadata."""

    async def __call__(self, call: Call, proceed: Continue) -> Message:
        for key in (TENANT_KEY, OPERATOR_KEY):
            refusal = problem(key, call.metadata.get(key, ""))
            if refusal is not None:
                raise errors.unauthenticated(refusal, header=key)
        call.caller = Caller(tenant=call.metadata[TENANT_KEY], operator=call.metadata[OPERATOR_KEY])
        return await proceed()


def caller_of(call: Call) -> Caller:
    """The caller ``CallerIdentity`` established, or UNAUTHENTICATED (it did not run)."""
    if call.caller is None:
        raise errors.unauthenticated("no caller identity")
    return call.caller

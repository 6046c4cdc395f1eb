"""The audit record of every RPC: a guard outside the refusing guards, and a filter after decoding.

``AuditFilter.around`` is a guard that sits right after tracing (so the trace ID is known) and
before the workload check, caller identification and access control, so their refusals are
recorded too; it records every call's outcome. ``AuditFilter.request`` is the first filter after
the chain decoded the request: it records the RPC's intent with the request (as JSON, and the data
subject's pseudonym) before anything else looks at it. A call that never got that far (refused by
a guard, or bytes that do not decode: ``MALFORMED_REQUEST``) gets its intent from ``around``, with
the size and SM3 of the bytes that arrived instead of the request, never the bytes. So every call
that reached the chain has exactly one intent and one outcome, in that order.

The intent is committed with the RPC's first platform transaction's intent, before anything is
sent; if it cannot be written the RPC fails with UNAVAILABLE / AUDIT_UNAVAILABLE and nothing is
sent to the platform. Recording never fails on a request gRPC accepted: a message that protobuf's
JSON mapping refuses (a Timestamp outside 0001..9999, which the time-field filter refuses next) is
recorded in protobuf text format instead. The caller's tenant and operator are recorded only when
acceptable (``caller.well_formed``: never a value that looks like personal data), else as empty.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from dataclasses import dataclass

from google.protobuf import json_format, text_format
from google.protobuf.message import Message

from hsm.sm.sm3 import sm3
from sidecar import errors
from sidecar.audit.hsm_keys import subject_message
from sidecar.audit.trail import AuditTrail, AuditUnavailable, RpcAudit
from sidecar.interceptors.caller import well_formed
from sidecar.interceptors.chain import Call, Continue, Proceed


def request_subject(request: Message) -> bytes | None:
    """The data subject the request names (``subject`` field), as the pseudonym's input."""
    if "subject" not in request.DESCRIPTOR.fields_by_name or not request.HasField("subject"):
        return None
    subject = request.subject  # type: ignore[attr-defined]
    if not subject.certificate_number:
        return None
    return subject_message(int(subject.certificate_type), subject.certificate_number)


def as_json(message: Message) -> bytes:
    """The message as JSON; protobuf text format where the JSON mapping refuses a value."""
    try:
        return json_format.MessageToJson(message, indent=None, sort_keys=True).encode()
    except json_format.Error:
        text = text_format.MessageToString(message, as_one_line=True)
        return json.dumps({"text_format": text}, ensure_ascii=False).encode()


def undecoded(body: bytes) -> bytes:
    """What the intent of a call whose request was never decoded says about its bytes."""
    return json.dumps({"undecoded": {"bytes": len(body), "sm3": sm3(body).hex()}}).encode()


@dataclass
class _Pending:
    """One call's audit state, from ``around`` to ``request`` and back."""

    audit: RpcAudit | None = None
    refused: bool = False  # the intent could not be written: no outcome either


class AuditFilter:
    def __init__(self, trail: AuditTrail) -> None:
        self._trail = trail
        self._pending: weakref.WeakKeyDictionary[Call, _Pending] = weakref.WeakKeyDictionary()

    async def _intent(
        self, call: Call, pending: _Pending, subject: bytes | None, request: bytes
    ) -> RpcAudit:
        caller = well_formed(call.metadata)
        try:
            audit = await self._trail.rpc_intent(
                rpc=call.rpc,
                tenant=caller.tenant,
                operator=caller.operator,
                subject=subject,
                trace_id=call.trace_id,  # the server span's (tracing runs before us)
                request=request,
            )
        except AuditUnavailable:
            pending.refused = True
            raise errors.audit_unavailable() from None
        pending.audit = audit
        return audit

    async def request(self, call: Call, request: Message, proceed: Proceed) -> Message:
        """Filter (first after decoding): the intent, with the decoded request."""
        pending = self._pending.get(call)
        if pending is None:
            raise errors.internal()  # ``around`` is not in the chain: fail closed
        await self._intent(call, pending, request_subject(request), as_json(request))
        return await proceed(request)

    async def around(self, call: Call, proceed: Continue) -> Message:
        """Guard: the outcome of every call (and the intent of one never decoded)."""
        pending = self._pending[call] = _Pending()
        status, reason, error, answer = "OK", "", "", b""
        try:
            response = await proceed()
            answer = as_json(response)
            return response
        except AuditUnavailable:
            status, reason, error = "UNAVAILABLE", "AUDIT_UNAVAILABLE", "AuditUnavailable"
            raise errors.audit_unavailable() from None
        except errors.GatewayError as exc:
            status, reason, error = exc.code.name, exc.reason, "GatewayError"
            answer = exc.message.encode()
            raise
        except NotImplementedError:
            status, reason = "UNIMPLEMENTED", "NOT_IMPLEMENTED"
            error = "NotImplementedError"
            raise
        except asyncio.CancelledError:
            status, error = "CANCELLED", "CancelledError"
            raise
        except Exception as exc:
            status, reason, error = "INTERNAL", "INTERNAL", type(exc).__name__
            raise
        finally:
            if not pending.refused:
                audit = pending.audit
                if audit is None:  # refused by a guard, or the bytes did not decode
                    audit = await self._intent(call, pending, None, undecoded(call.body))
                try:
                    await self._trail.rpc_outcome(
                        audit, status=status, reason=reason, error=error, answer=answer
                    )
                except AuditUnavailable:  # the local spool or journal broke meanwhile
                    raise errors.audit_unavailable() from None

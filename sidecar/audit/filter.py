"""Filter: the audit record of every RPC, written outside the access-control and consent filters.

It sits right after tracing (so the trace ID is known) and before caller identification, access
control and the consent gate, so their refusals are recorded too. The RPC's intent is committed
with its first platform transaction's intent, before anything is sent; if that cannot be written
the RPC fails with UNAVAILABLE / AUDIT_UNAVAILABLE and nothing is sent to the platform. The
caller's tenant and operator are taken from metadata only when they are well-formed (otherwise
recorded as empty: caller identification will refuse the call anyway).
"""

from __future__ import annotations

import asyncio
import re

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry import trace

from sidecar import errors
from sidecar.audit.hsm_keys import subject_message
from sidecar.audit.trail import AuditTrail, AuditUnavailable
from sidecar.interceptors.caller import OPERATOR_KEY, TENANT_KEY
from sidecar.interceptors.chain import Call, Proceed

_TENANT = re.compile(r"[A-Za-z0-9._-]{1,64}")
_OPERATOR = re.compile(r"[A-Za-z0-9._@-]{1,30}")
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")


def request_subject(request: Message) -> bytes | None:
    """The data subject the request names (``subject`` field), as the pseudonym's input."""
    if "subject" not in request.DESCRIPTOR.fields_by_name or not request.HasField("subject"):
        return None
    subject = request.subject  # type: ignore[attr-defined]
    if not subject.certificate_number:
        return None
    return subject_message(int(subject.certificate_type), subject.certificate_number)


def trace_id(call: Call) -> str:
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        return f"{context.trace_id:032x}"
    match = _TRACEPARENT.fullmatch(call.metadata.get("traceparent", ""))
    return match.group(1) if match else ""


def _as_json(message: Message) -> bytes:
    return json_format.MessageToJson(message, indent=None, sort_keys=True).encode()


class AuditFilter:
    def __init__(self, trail: AuditTrail) -> None:
        self._trail = trail

    async def __call__(self, call: Call, request: Message, proceed: Proceed) -> Message:
        tenant = call.metadata.get(TENANT_KEY, "")
        operator = call.metadata.get(OPERATOR_KEY, "")
        try:
            audit = await self._trail.rpc_intent(
                rpc=call.rpc,
                tenant=tenant if _TENANT.fullmatch(tenant) else "",
                operator=operator if _OPERATOR.fullmatch(operator) else "",
                subject=request_subject(request),
                trace_id=trace_id(call),
                request=_as_json(request),
            )
        except AuditUnavailable:
            raise errors.audit_unavailable() from None
        status, reason, error, answer = "OK", "", "", b""
        try:
            response = await proceed(request)
            answer = _as_json(response)
            return response
        except AuditUnavailable:
            status, reason, error = "UNAVAILABLE", "AUDIT_UNAVAILABLE", "AuditUnavailable"
            raise errors.audit_unavailable() from None
        except errors.GatewayError as exc:
            status, reason, error = exc.code.name, exc.reason, "GatewayError"
            answer = exc.message.encode()
            raise
        except NotImplementedError:
            status, reason = grpc.StatusCode.UNIMPLEMENTED.name, "NOT_IMPLEMENTED"
            error = "NotImplementedError"
            raise
        except asyncio.CancelledError:
            status, error = grpc.StatusCode.CANCELLED.name, "CancelledError"
            raise
        except Exception as exc:
            status, reason, error = "INTERNAL", "INTERNAL", type(exc).__name__
            raise
        finally:
            await self._trail.rpc_outcome(
                audit, status=status, reason=reason, error=error, answer=answer
            )

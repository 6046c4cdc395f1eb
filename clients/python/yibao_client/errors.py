"""The sidecar's rich gRPC status as typed exceptions (docs/api.md, "Error model").

Every error the sidecar raises is a gRPC status with ``google.rpc`` details in the
``grpc-status-details-bin`` trailer: an ``ErrorInfo`` (stable ``reason`` and metadata), a
``BadRequest`` (one field violation per bad field) on INVALID_ARGUMENT, a ``RetryInfo`` when
retrying later may help. :func:`from_rpc_error` turns a ``grpc.RpcError`` into a
:class:`SidecarError` subclass per status code that carries all three, so that callers switch on
``reason`` and never parse the message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import cast

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

DOMAIN = "yibao-sidecar.gateway"
DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request: ``field`` is the path (``fee_items[2].quantity``)."""

    field: str
    description: str


class SidecarError(Exception):
    """A call that failed: the gRPC status code, and the sidecar's details where it sent them.

    ``reason`` is the ErrorInfo reason (``CONSENT_REQUIRED``, ...) or ``None`` for statuses from
    gRPC itself (no connection, the caller's own deadline); ``metadata`` the ErrorInfo metadata
    (``purpose``, ``platform_code``, ``header``, ...); ``field_violations`` the BadRequest's;
    ``retry_delay`` the RetryInfo's suggested delay in seconds, or ``None``. ``attempts`` counts
    the calls made, retries included.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str | None = None,
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
        field_violations: tuple[FieldViolation, ...] = (),
        retry_delay: float | None = None,
        method: str = "",
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata: Mapping[str, str] = MappingProxyType(dict(metadata or {}))
        self.field_violations = field_violations
        self.retry_delay = retry_delay
        self.method = method
        self.attempts = attempts

    def __str__(self) -> str:
        head = f"{self.code.name} {self.reason}" if self.reason else self.code.name
        fields = ", ".join(v.field for v in self.field_violations if v.field)
        tail = f" [fields: {fields}]" if fields else ""
        return f"{head}: {self.message}{tail}"

    def as_dict(self) -> dict[str, object]:
        """Everything the status said, as plain JSON-ready values."""
        answer: dict[str, object] = {"code": self.code.name, "message": self.message}
        if self.reason is not None:
            answer["error_info"] = {
                "reason": self.reason,
                "domain": self.domain,
                "metadata": dict(self.metadata),
            }
        if self.field_violations:
            answer["field_violations"] = [
                {"field": v.field, "description": v.description} for v in self.field_violations
            ]
        if self.retry_delay is not None:
            answer["retry_delay_seconds"] = self.retry_delay
        return answer


class InvalidArgument(SidecarError):
    """INVALID_ARGUMENT: ``INVALID_REQUEST`` (see ``field_violations``) or ``MALFORMED_REQUEST``."""


class Unauthenticated(SidecarError):
    """UNAUTHENTICATED: ``CALLER_UNAUTHENTICATED`` (metadata ``header``) or
    ``PEER_UNAUTHENTICATED``."""


class PermissionDenied(SidecarError):
    """PERMISSION_DENIED: ``RPC_NOT_ALLOWED``, ``TENANT_NOT_ALLOWED``, ``CALLER_NOT_ALLOWED``."""


class FailedPrecondition(SidecarError):
    """FAILED_PRECONDITION: ``CONSENT_REQUIRED`` or ``PLATFORM_REFUSED``."""


class ConsentRequired(FailedPrecondition):
    """No active consent for the RPC's purpose (metadata ``purpose``): GrantConsent, then repeat."""


class PlatformRefused(FailedPrecondition):
    """The platform refused as a business matter (metadata ``platform_code``, ``platform_message``;
    the latter may quote the person's data: show it, do not log it)."""


class NotFound(SidecarError):
    """NOT_FOUND: ``PERSON_NOT_FOUND``, ``SETTLEMENT_NOT_FOUND``, ``REGISTRATION_NOT_FOUND``, ..."""


class AlreadyExists(SidecarError):
    """ALREADY_EXISTS: ``IDEMPOTENCY_KEY_REUSED`` (the request_id was used with another payload)."""


class Aborted(SidecarError):
    """ABORTED: ``REQUEST_IN_PROGRESS`` (a call with the same request_id is still running)."""


class Unavailable(SidecarError):
    """UNAVAILABLE: ``PLATFORM_UNAVAILABLE``, ``STORE_UNAVAILABLE``, ``AUDIT_UNAVAILABLE``, or no
    connection (no reason)."""


class DeadlineExceeded(SidecarError):
    """DEADLINE_EXCEEDED: ``PLATFORM_TIMEOUT``, or the caller's own deadline (no reason). For a
    mutating call the outcome is unknown: repeat with the same request_id."""


class ResourceExhausted(SidecarError):
    """RESOURCE_EXHAUSTED: ``RATE_LIMITED`` (metadata ``limit``), or a message over gRPC's size."""


class Unimplemented(SidecarError):
    """UNIMPLEMENTED: the RPC is in the contract but not built (or not for the region)."""


class Internal(SidecarError):
    """INTERNAL: a bug in the sidecar; quote the trace id to support."""


_BY_CODE: dict[grpc.StatusCode, type[SidecarError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
    grpc.StatusCode.INTERNAL: Internal,
}
_BY_REASON: dict[str, type[SidecarError]] = {
    "CONSENT_REQUIRED": ConsentRequired,
    "PLATFORM_REFUSED": PlatformRefused,
}


def from_status(
    code: grpc.StatusCode,
    message: str,
    details: bytes | None,
    *,
    method: str = "",
    attempts: int = 1,
) -> SidecarError:
    """The typed error of a status and its serialized ``google.rpc.Status`` (may be absent or
    unreadable: then the error has no details, never a crash)."""
    reason: str | None = None
    domain = ""
    metadata: dict[str, str] = {}
    violations: list[FieldViolation] = []
    retry_delay: float | None = None
    for detail in _details(details):
        info = error_details_pb2.ErrorInfo()
        bad = error_details_pb2.BadRequest()
        retry = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
        elif detail.Unpack(bad):
            violations += [FieldViolation(v.field, v.description) for v in bad.field_violations]
        elif detail.Unpack(retry):
            retry_delay = retry.retry_delay.ToNanoseconds() / 1e9
    kind = _BY_REASON.get(reason or "", _BY_CODE.get(code, SidecarError))
    if not issubclass(kind, _BY_CODE.get(code, SidecarError)):
        kind = _BY_CODE.get(code, SidecarError)
    return kind(
        code,
        message,
        reason=reason,
        domain=domain,
        metadata=metadata,
        field_violations=tuple(violations),
        retry_delay=retry_delay,
        method=method,
        attempts=attempts,
    )


def from_rpc_error(error: grpc.RpcError, *, method: str = "", attempts: int = 1) -> SidecarError:
    """The typed error of a failed call (sync ``grpc.RpcError`` or ``grpc.aio.AioRpcError``)."""
    code = _call_attr(error, "code")
    message = _call_attr(error, "details")
    trailers = cast("tuple[tuple[str, str | bytes], ...]", _call_attr(error, "trailing_metadata"))
    details = next((v for k, v in trailers or () if k == DETAILS_KEY), None)
    return from_status(
        code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN,
        message if isinstance(message, str) else "",
        details if isinstance(details, bytes) else None,
        method=method,
        attempts=attempts,
    )


def _call_attr(error: grpc.RpcError, name: str) -> object:
    getter = getattr(error, name, None)
    return getter() if callable(getter) else None


def _details(raw: bytes | None) -> list[any_pb2.Any]:
    if not raw:
        return []
    status = status_pb2.Status()
    try:
        status.ParseFromString(raw)
    except Exception:  # a corrupt trailer: keep the code and message, drop the details
        return []
    return list(status.details)

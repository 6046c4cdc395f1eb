"""The error model: every refusal is a ``GatewayError`` that becomes a rich gRPC status.

A ``GatewayError`` carries a gRPC status code, a stable machine-readable ``reason`` (the
``google.rpc.ErrorInfo`` of the contract, documented in docs/api.md), a human message, and
optionally the fields that were wrong (``google.rpc.BadRequest``) and a retry hint
(``google.rpc.RetryInfo``). Messages and details never quote personal data: they name fields and
rules, not values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "yibao-sidecar.gateway"


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


@dataclass
class GatewayError(Exception):
    """A refusal with everything a caller needs to react to it."""

    code: grpc.StatusCode
    reason: str
    message: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    violations: Sequence[FieldViolation] = ()
    retry_after_seconds: float | None = None

    def __str__(self) -> str:
        return f"{self.code.name} {self.reason}: {self.message}"

    def to_status(self) -> grpc.Status:
        """The ``grpc.Status`` with ``google.rpc`` details for ``context.abort_with_status``."""
        details = [
            _pack(
                error_details_pb2.ErrorInfo(
                    reason=self.reason, domain=DOMAIN, metadata=dict(self.metadata)
                )
            )
        ]
        if self.violations:
            bad_request = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in self.violations
                ]
            )
            details.append(_pack(bad_request))
        if self.retry_after_seconds is not None:
            delay = duration_pb2.Duration()
            delay.FromNanoseconds(int(self.retry_after_seconds * 1e9))
            details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
        status = status_pb2.Status(
            code=_CODE_NUMBERS[self.code], message=self.message, details=details
        )
        return rpc_status.to_status(status)


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


_CODE_NUMBERS: dict[grpc.StatusCode, int] = {c: c.value[0] for c in grpc.StatusCode}
assert _CODE_NUMBERS[grpc.StatusCode.INVALID_ARGUMENT] == code_pb2.INVALID_ARGUMENT


def invalid_request(violations: Sequence[FieldViolation]) -> GatewayError:
    fields = ", ".join(v.field for v in violations)
    return GatewayError(
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_REQUEST",
        f"the request has invalid fields: {fields}",
        violations=violations,
    )


def unauthenticated(message: str, header: str = "") -> GatewayError:
    """The caller is not identified; ``header`` names the metadata key at fault."""
    return GatewayError(
        grpc.StatusCode.UNAUTHENTICATED,
        "CALLER_UNAUTHENTICATED",
        message,
        metadata={"header": header} if header else {},
    )


def platform_refused(platform_code: str, platform_message: str) -> GatewayError:
    return GatewayError(
        grpc.StatusCode.FAILED_PRECONDITION,
        "PLATFORM_REFUSED",
        # The platform's text may quote personal data: it travels in ErrorInfo metadata only.
        f"the insurance platform refused the request (infcode {platform_code})",
        metadata={"platform_code": platform_code, "platform_message": platform_message},
    )


def platform_unavailable(message: str, retry_after_seconds: float = 1.0) -> GatewayError:
    return GatewayError(
        grpc.StatusCode.UNAVAILABLE,
        "PLATFORM_UNAVAILABLE",
        message,
        retry_after_seconds=retry_after_seconds,
    )


def platform_timeout(message: str) -> GatewayError:
    return GatewayError(grpc.StatusCode.DEADLINE_EXCEEDED, "PLATFORM_TIMEOUT", message)


def not_implemented(method: str) -> GatewayError:
    return GatewayError(
        grpc.StatusCode.UNIMPLEMENTED,
        "NOT_IMPLEMENTED",
        f"{method.rsplit('/', 1)[-1]} is part of the contract but not available yet",
    )


def internal() -> GatewayError:
    return GatewayError(grpc.StatusCode.INTERNAL, "INTERNAL", "internal error; see sidecar logs")


def audit_unavailable(retry_after_seconds: float = 1.0) -> GatewayError:
    """The audit trail cannot record the call: fail closed, nothing was sent to the platform."""
    return GatewayError(
        grpc.StatusCode.UNAVAILABLE,
        "AUDIT_UNAVAILABLE",
        "the audit trail cannot be written; nothing was sent to the platform",
        retry_after_seconds=retry_after_seconds,
    )

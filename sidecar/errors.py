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
MALFORMED_REQUEST = "MALFORMED_REQUEST"
# gRPC refuses trailers over 16 KiB (grpc.max_metadata_size) and the client then sees
# RESOURCE_EXHAUSTED instead of our status: the rich status is bounded well below that.
# grpc-status-details-bin travels base64-encoded (4/3), grpc-message percent-encoded.
MAX_VIOLATIONS = 20  # listed in BadRequest; the rest are counted in one more violation
MAX_DETAILS_BYTES = 6 * 1024  # the serialized google.rpc.Status, before base64
MAX_MESSAGE_BYTES = 1024  # UTF-8; percent-encoding at most triples it
MAX_TEXT_CHARS = 256  # one violation's field or description
MAX_METADATA_CHARS = 1024  # one ErrorInfo metadata value (platform_message is shown to people)


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
        """The ``grpc.Status`` with ``google.rpc`` details for ``context.abort_with_status``.

        Bounded so that it always fits gRPC's trailers: at most ``MAX_VIOLATIONS`` field
        violations (then one more, field ``""``, counting the rest; ErrorInfo metadata
        ``violations`` holds the total), texts cut at ``MAX_TEXT_CHARS`` /
        ``MAX_METADATA_CHARS``, the message at ``MAX_MESSAGE_BYTES``, and fewer violations listed
        if the details still exceed ``MAX_DETAILS_BYTES``.
        """
        listed = min(len(self.violations), MAX_VIOLATIONS)
        status = self._status(listed)
        while status.ByteSize() > MAX_DETAILS_BYTES and listed > 0:
            listed //= 2
            status = self._status(listed)
        return rpc_status.to_status(status)

    def _status(self, listed: int) -> status_pb2.Status:
        metadata = {key: _cut(value, MAX_METADATA_CHARS) for key, value in self.metadata.items()}
        if len(self.violations) > listed:
            metadata["violations"] = str(len(self.violations))
        details = [
            _pack(error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN, metadata=metadata))
        ]
        if self.violations:
            shown = [
                error_details_pb2.BadRequest.FieldViolation(
                    field=_cut(v.field), description=_cut(v.description)
                )
                for v in self.violations[:listed]
            ]
            rest = len(self.violations) - listed
            if rest:
                shown.append(
                    error_details_pb2.BadRequest.FieldViolation(
                        field="",
                        description=f"and {rest} more invalid fields, not listed "
                        f"({len(self.violations)} in all)",
                    )
                )
            details.append(_pack(error_details_pb2.BadRequest(field_violations=shown)))
        if self.retry_after_seconds is not None:
            delay = duration_pb2.Duration()
            delay.FromNanoseconds(int(self.retry_after_seconds * 1e9))
            details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
        return status_pb2.Status(
            code=_CODE_NUMBERS[self.code],
            message=_cut_utf8(self.message, MAX_MESSAGE_BYTES),
            details=details,
        )


def _cut(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cut_utf8(text: str, limit: int) -> str:
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode(errors="ignore") + "…"


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


_CODE_NUMBERS: dict[grpc.StatusCode, int] = {c: c.value[0] for c in grpc.StatusCode}
assert _CODE_NUMBERS[grpc.StatusCode.INVALID_ARGUMENT] == code_pb2.INVALID_ARGUMENT


def invalid_request(violations: Sequence[FieldViolation]) -> GatewayError:
    fields = ", ".join(v.field for v in violations[:MAX_VIOLATIONS])
    if len(violations) > MAX_VIOLATIONS:
        fields += f" and {len(violations) - MAX_VIOLATIONS} more"
    return GatewayError(
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_REQUEST",
        f"the request has invalid fields: {fields}",
        violations=violations,
    )


def malformed_request(rpc: str) -> GatewayError:
    """The request's bytes do not parse as the RPC's request message (never quotes them)."""
    return GatewayError(
        grpc.StatusCode.INVALID_ARGUMENT,
        MALFORMED_REQUEST,
        f"the request is not a valid {rpc} request message (protobuf wire format)",
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

"""Turning a status into a typed error: every detail kept, bad trailers never a crash."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from yibao_client import (
    ConsentRequired,
    FieldViolation,
    ResourceExhausted,
    SidecarError,
    Unavailable,
)
from yibao_client.errors import from_status
from yibao_client.retry import RetryPolicy, next_delay


def packed(*details: object) -> bytes:
    anys = []
    for detail in details:
        one = any_pb2.Any()
        one.Pack(detail)
        anys.append(one)
    return status_pb2.Status(code=8, message="m", details=anys).SerializeToString()


def test_error_info_bad_request_and_retry_info_are_all_kept() -> None:
    info = error_details_pb2.ErrorInfo(
        reason="RATE_LIMITED", domain="yibao-sidecar.gateway", metadata={"limit": "operator"}
    )
    bad = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field="a.b", description="bad")
        ]
    )
    retry = error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(seconds=2, nanos=5 * 10**8)
    )
    error = from_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", packed(info, bad, retry))
    assert isinstance(error, ResourceExhausted)
    assert (error.reason, dict(error.metadata)) == ("RATE_LIMITED", {"limit": "operator"})
    assert error.field_violations == (FieldViolation("a.b", "bad"),)
    assert error.retry_delay == 2.5
    assert error.as_dict()["retry_delay_seconds"] == 2.5


def test_a_reason_picks_its_own_class_only_under_its_code() -> None:
    consent = error_details_pb2.ErrorInfo(reason="CONSENT_REQUIRED", domain="yibao-sidecar.gateway")
    assert isinstance(
        from_status(grpc.StatusCode.FAILED_PRECONDITION, "", packed(consent)), ConsentRequired
    )
    # the same reason under another code is not trusted to be a consent refusal
    other = from_status(grpc.StatusCode.UNAVAILABLE, "", packed(consent))
    assert type(other) is Unavailable


def test_a_corrupt_or_missing_trailer_keeps_code_and_message() -> None:
    for raw in (b"\xff\x00garbage", b"", None):
        error = from_status(grpc.StatusCode.UNAVAILABLE, "no connection", raw)
        assert isinstance(error, Unavailable)
        assert (error.reason, error.field_violations, error.retry_delay) == (None, (), None)
    unknown = from_status(grpc.StatusCode.DATA_LOSS, "?", None)
    assert type(unknown) is SidecarError


def test_only_retry_safe_calls_with_retryable_reasons_get_a_delay() -> None:
    policy = RetryPolicy(max_attempts=3, initial_backoff=0.1, max_backoff=1.0)
    timeout = error_details_pb2.ErrorInfo(reason="PLATFORM_TIMEOUT", domain="yibao-sidecar.gateway")
    refused = error_details_pb2.ErrorInfo(reason="PLATFORM_REFUSED", domain="yibao-sidecar.gateway")
    lost = from_status(grpc.StatusCode.DEADLINE_EXCEEDED, "", packed(timeout))
    no = from_status(grpc.StatusCode.FAILED_PRECONDITION, "", packed(refused))
    internal = from_status(grpc.StatusCode.INTERNAL, "", None)
    own_deadline = from_status(grpc.StatusCode.DEADLINE_EXCEEDED, "", None)

    def delay(error: SidecarError, read_only: bool, request_id: str, attempt: int = 1) -> object:
        return next_delay(
            policy, error, attempt=attempt, read_only=read_only, request_id=request_id, remaining=10
        )

    assert delay(lost, read_only=True, request_id="") is not None
    assert delay(lost, read_only=False, request_id="key-1") is not None
    assert delay(lost, read_only=False, request_id="") is None  # no key: could act twice
    assert delay(no, read_only=True, request_id="") is None
    assert delay(internal, read_only=True, request_id="") is None
    assert delay(own_deadline, read_only=True, request_id="") is None
    assert delay(lost, read_only=True, request_id="", attempt=3) is None  # attempts used up

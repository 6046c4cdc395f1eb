"""Translates the platform layer's failures into the contract's error model."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import grpc

from sidecar import errors
from sidecar.platform.errors import PlatformRefusal, PlatformUnreachable


@contextmanager
def translated(not_found_markers: Sequence[str] = (), not_found_reason: str = "") -> Iterator[None]:
    """Inside this block, platform failures surface as ``GatewayError``.

    A refusal whose message contains one of ``not_found_markers`` becomes NOT_FOUND with
    ``not_found_reason``; other refusals are FAILED_PRECONDITION / PLATFORM_REFUSED. Both carry the
    platform's code and message.
    """
    try:
        yield
    except PlatformRefusal as refusal:
        if not_found_reason and any(m in refusal.err_msg for m in not_found_markers):
            raise errors.GatewayError(
                grpc.StatusCode.NOT_FOUND,
                not_found_reason,
                "the insurance platform found no match (see ErrorInfo platform_message)",
                metadata={
                    "platform_code": str(refusal.infcode),
                    "platform_message": refusal.err_msg,
                },
            ) from None
        raise errors.platform_refused(str(refusal.infcode), refusal.err_msg) from None
    except PlatformUnreachable as failure:
        if failure.timed_out:
            raise errors.platform_timeout("the insurance platform did not answer in time") from None
        raise errors.platform_unavailable(
            f"the insurance platform is unreachable: {failure}",
            retry_after_seconds=failure.retry_after if failure.retry_after is not None else 1.0,
        ) from None

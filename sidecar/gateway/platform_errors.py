"""Translates the platform layer's failures into the contract's error model."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import grpc

from sidecar import errors
from sidecar.platform.errors import PlatformRefusal, PlatformUnreachable


@contextmanager
def translated(person_not_found: Sequence[str] = ()) -> Iterator[None]:
    """Inside this block, platform failures surface as ``GatewayError``.

    A refusal whose message contains one of ``person_not_found`` (``platform.
    person_not_found_messages``, for blocks around 1101) becomes NOT_FOUND / PERSON_NOT_FOUND;
    other refusals are FAILED_PRECONDITION / PLATFORM_REFUSED. Both carry the platform's code and
    message.
    """
    try:
        yield
    except PlatformRefusal as refusal:
        if says(refusal, person_not_found):
            raise no_such_person(refusal) from None
        raise errors.platform_refused(str(refusal.infcode), refusal.err_msg) from None
    except PlatformUnreachable as failure:
        raise unreachable(failure.timed_out, str(failure), failure.retry_after) from None


def says(refusal: PlatformRefusal, markers: Sequence[str]) -> bool:
    """Whether the refusal's text contains one of ``markers`` (the platform has no codes)."""
    return any(marker in refusal.err_msg for marker in markers)


def no_such_person(refusal: PlatformRefusal) -> errors.GatewayError:
    """1101 found nobody: the one PERSON_NOT_FOUND of every function (settlement included)."""
    return errors.GatewayError(
        grpc.StatusCode.NOT_FOUND,
        "PERSON_NOT_FOUND",
        "the insurance platform found no such person (see ErrorInfo platform_message)",
        metadata={"platform_code": str(refusal.infcode), "platform_message": refusal.err_msg},
    )


def unreachable(timed_out: bool, detail: str, retry_after: float | None) -> errors.GatewayError:
    """No valid answer: PLATFORM_TIMEOUT past the deadline, else PLATFORM_UNAVAILABLE."""
    if timed_out:
        return errors.platform_timeout("the insurance platform did not answer in time")
    return errors.platform_unavailable(
        f"the insurance platform is unreachable: {detail}",
        retry_after_seconds=retry_after if retry_after is not None else 1.0,
    )

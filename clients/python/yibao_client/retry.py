"""What the client repeats by itself: only what docs/api.md calls retry-safe, within the deadline.

A failed call is repeated when both hold:

* the call is safe to repeat: the RPC is read-only (``idempotency_level = NO_SIDE_EFFECTS`` in
  the proto), or it carries a ``request_id`` — the idempotency key makes a repeat of a mutating
  call return the first outcome instead of acting twice (docs/api.md, "Idempotency"); the
  repeat sends the very same request, so the same key;
* the status says that trying again may help: ErrorInfo reason ``PLATFORM_UNAVAILABLE``,
  ``PLATFORM_TIMEOUT``, ``STORE_UNAVAILABLE``, ``AUDIT_UNAVAILABLE``, ``RATE_LIMITED`` or
  ``REQUEST_IN_PROGRESS``, or UNAVAILABLE without ErrorInfo (no connection to the sidecar).

Everything else is raised at once: refusals, bad requests, ``INTERNAL`` ("maybe, once": the
caller decides), and the caller's own deadline. The wait before a repeat is the status's
``RetryInfo`` delay when it has one, else exponential backoff with jitter; no repeat starts that
could not finish before the call's deadline.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import grpc

from yibao_client.errors import DOMAIN, SidecarError

RETRYABLE_REASONS = frozenset(
    {
        "PLATFORM_UNAVAILABLE",
        "PLATFORM_TIMEOUT",
        "STORE_UNAVAILABLE",
        "AUDIT_UNAVAILABLE",
        "RATE_LIMITED",
        "REQUEST_IN_PROGRESS",
    }
)
# A repeat needs at least this much of the deadline left to be worth sending (seconds).
MIN_ATTEMPT_SECONDS = 0.05


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to repeat a retry-safe call (``max_attempts=1``: never)."""

    max_attempts: int = 4
    initial_backoff: float = 0.2
    max_backoff: float = 5.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not 0 < self.initial_backoff <= self.max_backoff:
            raise ValueError("need 0 < initial_backoff <= max_backoff")

    def delay(self, attempt: int, error: SidecarError) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if error.retry_delay is not None:
            return min(max(error.retry_delay, 0.0), self.max_backoff)
        backoff = min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))
        return backoff * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not a secret


NO_RETRIES = RetryPolicy(max_attempts=1)


def retry_safe(*, read_only: bool, request_id: str) -> bool:
    """Whether a call may be sent again at all: read-only, or idempotent by its request_id."""
    return read_only or bool(request_id)


def retryable(error: SidecarError) -> bool:
    """Whether the status says a repeat may succeed."""
    if error.reason is None:
        return error.code is grpc.StatusCode.UNAVAILABLE
    return error.domain == DOMAIN and error.reason in RETRYABLE_REASONS


def next_delay(
    policy: RetryPolicy,
    error: SidecarError,
    *,
    attempt: int,
    read_only: bool,
    request_id: str,
    remaining: float,
) -> float | None:
    """The wait before the next attempt, or ``None`` when the error is to be raised."""
    if attempt >= policy.max_attempts:
        return None
    if not (retry_safe(read_only=read_only, request_id=request_id) and retryable(error)):
        return None
    delay = policy.delay(attempt, error)
    if remaining - delay < MIN_ATTEMPT_SECONDS:
        return None
    return delay

"""Call rates per tenant and per operator, on the ``limits`` library's moving window.

A call is admitted only if every limit that applies to it has room, and then counts against all
of them; a refused call counts against none, so a caller that is over its operator limit does not
also eat its tenant's share. The window is exact (``MovingWindowRateLimiter``: a timestamp per
admitted call within the window), kept in memory per process: each replica limits its own pod's
caller, which is what a per-pod sidecar serves.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter


def parse_rate(text: str) -> RateLimitItem:
    """``"100/second"``, ``"20 per minute"``, ...; ValueError for anything else or zero."""
    item = parse(text)
    if item.amount < 1:
        raise ValueError("a rate must allow at least one call")
    return item


@dataclass(frozen=True)
class Limit:
    """One limit that applies to a call: its scope name, the rate, and the key it counts on."""

    scope: str  # "tenant" or "operator": which limit refused, for ErrorInfo and the log
    rate: RateLimitItem
    key: tuple[str, ...]


@dataclass(frozen=True)
class Refusal:
    scope: str
    retry_after_seconds: float


class RateLimiter:
    """Admits or refuses a call against a set of limits, all or nothing."""

    def __init__(self) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def admit(self, limits: Sequence[Limit]) -> Refusal | None:
        """None if the call may go ahead (and is counted), else the first limit that is full."""
        for limit in limits:
            if not self._limiter.test(limit.rate, *limit.key):
                stats = self._limiter.get_window_stats(limit.rate, *limit.key)
                delay = max(stats.reset_time - time.time(), 0.0)
                return Refusal(limit.scope, delay)
        # No await between test and hit: on one event loop nothing can slip in between.
        for limit in limits:
            self._limiter.hit(limit.rate, *limit.key)
        return None

"""The caller's deadline carried through a function's several platform calls.

A gRPC deadline arrives as a budget in seconds (``context.time_remaining()``, ``None`` when the
caller set none). Functions that make several transactions turn it into a monotonic deadline
once and give each transaction what is left of it, so no call outlives the caller.
"""

from __future__ import annotations

import time


def deadline_after(budget: float | None) -> float | None:
    """The monotonic time at which ``budget`` seconds from now run out; None for no deadline."""
    return None if budget is None else time.monotonic() + budget


def time_left(deadline: float | None) -> float | None:
    """Seconds left before ``deadline`` (never negative); None for no deadline."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())

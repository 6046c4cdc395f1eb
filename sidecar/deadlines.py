"""The caller's deadline, carried through a function's several platform calls and store writes.

A gRPC deadline arrives as a budget in seconds (``context.time_remaining()``, ``None`` when the
caller set none). The filter chain turns it into one :class:`Deadline` per call; functions that
make several transactions hand the same deadline to each of them, so no call outlives the caller.

A ``Deadline`` is an instant on a monotonic clock (``time.monotonic``, which is also asyncio's
loop clock; tests inject their own), or *unbounded* when the caller set none. Unbounded is not
"forever" everywhere: each platform request is still bounded by ``platform.timeout_seconds``, and
a function that must hold a lease picks its own bound with :meth:`Deadline.or_after` (a
settlement: ``settlement.default_budget_seconds``). Nothing here knows about gRPC.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

Clock = Callable[[], float]


@dataclass(frozen=True)
class Deadline:
    """When the caller stops waiting: ``at`` on ``clock`` (seconds), or ``None`` for no deadline."""

    at: float | None = None
    clock: Clock = field(default=time.monotonic, compare=False, repr=False)

    @classmethod
    def after(cls, seconds: float, clock: Clock = time.monotonic) -> Deadline:
        """``seconds`` from now (a negative budget is a deadline already passed)."""
        return cls(clock() + seconds, clock)

    @classmethod
    def of_budget(cls, seconds: float | None, clock: Clock = time.monotonic) -> Deadline:
        """gRPC's ``time_remaining()``: seconds left, or ``None`` (unbounded)."""
        return cls(None, clock) if seconds is None else cls.after(seconds, clock)

    @property
    def bounded(self) -> bool:
        return self.at is not None

    def left(self) -> float | None:
        """Seconds left, never negative; ``None`` when unbounded."""
        return None if self.at is None else max(0.0, self.at - self.clock())

    @property
    def expired(self) -> bool:
        return self.at is not None and self.clock() >= self.at

    def earlier(self, other: Deadline) -> Deadline:
        """Whichever of the two comes first (an unbounded one never does)."""
        if other.at is None:
            return self
        if self.at is None or other.at < self.at:
            return other
        return self

    def minus(self, reserve: float) -> Deadline:
        """``reserve`` seconds earlier (kept back to do something after); unbounded stays so."""
        return self if self.at is None else Deadline(self.at - reserve, self.clock)

    def or_after(self, seconds: float) -> Deadline:
        """This deadline, or ``seconds`` from now if it is unbounded (the caller's default)."""
        return self if self.at is not None else Deadline.after(seconds, self.clock)


NO_DEADLINE = Deadline()
"""The caller set no deadline (platform requests are still bounded by their own timeout)."""

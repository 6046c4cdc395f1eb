"""Message IDs: institution code (12) + ``yyyyMMddHHmmss`` (14) + sequence (4).

The format leaves 10,000 IDs per second per institution. This generator hands them out in order
within one process and waits for the next second when a second's sequence is used up. Uniqueness
across replicas comes from the sequence source (see issue "platform protocol").
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable

from sidecar.platform.envelope import beijing_now

SEQUENCE_SPACE = 10_000


class MsgIdGenerator:
    """Unique, ordered message IDs for one institution within one process."""

    def __init__(
        self,
        institution_code: str,
        clock: Callable[[], dt.datetime] = beijing_now,
    ) -> None:
        if len(institution_code) != 12:
            raise ValueError("institution code must be 12 characters")
        self._institution = institution_code
        self._clock = clock
        self._second = ""
        self._next = 0
        self._lock = asyncio.Lock()

    async def next(self) -> str:
        async with self._lock:
            while True:
                second = self._clock().strftime("%Y%m%d%H%M%S")
                if second > self._second:  # never step back, even if the wall clock does
                    self._second, self._next = second, 0
                if self._next < SEQUENCE_SPACE:
                    sequence = self._next
                    self._next += 1
                    return f"{self._institution}{self._second}{sequence:04d}"
                await asyncio.sleep(0.01)

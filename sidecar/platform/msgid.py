"""Message IDs: institution code (12) + ``yyyyMMddHHmmss`` (14) + sequence (4).

The format leaves 10,000 IDs per second per institution, shared by every sidecar replica of that
institution. Uniqueness across replicas comes from a **replica-unique partition of the sequence
space**: with ``slots`` replicas, replica ``slot`` owns the sequences
``[slot * size, (slot + 1) * size)`` where ``size = 10000 // slots``, so two replicas can never
produce the same ID, whatever their clocks do, without talking to each other per message. Within
a replica, IDs are handed out in order, never step back when the wall clock does, and wait for
the next second when the second's share is used up.

A generator never issues an ID in the second it was created: a replica restarted within the
second its predecessor last sent in (SIGKILL, crash loop) would otherwise hand out the same
sequence numbers again. Waiting for the next second costs the first message at most one second.

Who gives each replica its slot is deployment's job: a StatefulSet ordinal or an environment
variable per replica (``YIBAO_SIDECAR__PLATFORM__MSGID__SLOT``); replicas of a Deployment, which
have no ordinals, lease a slot from the shared store (``slot = "lease"``, msgid_lease.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Protocol

from sidecar.platform.envelope import beijing_now

SEQUENCE_SPACE = 10_000


class MsgIds(Protocol):
    """Where the platform client takes its message IDs from."""

    async def next(self) -> str: ...


class MsgIdGenerator:
    """Unique, ordered message IDs for one institution within one replica's share."""

    def __init__(
        self,
        institution_code: str,
        clock: Callable[[], dt.datetime] = beijing_now,
        *,
        slot: int = 0,
        slots: int = 1,
    ) -> None:
        if len(institution_code) != 12:
            raise ValueError("institution code must be 12 characters")
        if not 1 <= slots <= SEQUENCE_SPACE or not 0 <= slot < slots:
            raise ValueError("slot must be in [0, slots) and slots in [1, 10000]")
        self._institution = institution_code
        self._clock = clock
        size = SEQUENCE_SPACE // slots
        self._first = slot * size
        self._end = self._first + size
        # The creation second counts as used up: a predecessor in this slot may have sent in it.
        self._second = clock().strftime("%Y%m%d%H%M%S")
        self._next = self._end
        self._lock = asyncio.Lock()

    @property
    def per_second(self) -> int:
        """How many IDs this replica may send per second."""
        return self._end - self._first

    async def next(self) -> str:
        async with self._lock:
            while True:
                second = self._clock().strftime("%Y%m%d%H%M%S")
                if second > self._second:  # never step back, even if the wall clock does
                    self._second, self._next = second, self._first
                if self._next < self._end:
                    sequence = self._next
                    self._next += 1
                    return f"{self._institution}{self._second}{sequence:04d}"
                await asyncio.sleep(0.01)

"""State writes that outlive a store blip: retried with backoff within the caller's deadline.

Once the platform has acted (2207 answered or refused, 2601 reversed, 2208 cancelled), losing the
write that records it to a store that is away for a few seconds would turn a payment into a
refund: the row stays ``sending`` and is later reversed. So the machine's writes go through
:func:`durably`, which retries :class:`~sidecar.store.StoreUnavailable` with exponential backoff
and jitter (tenacity) until what is left of the caller's deadline, minus a small reserve to
answer, would be passed by the next sleep.

Retrying is safe because every write given to it is a conditional transition by the lease holder
that a repeat cannot apply twice (``SettlementRecords.move`` counts "already in the target state
with the same values" as done; ``record_attempt`` inserts its msgid once): a retry after a commit
whose acknowledgement was lost changes nothing. A row that fails to open (``SealError``) is not
a blip and is never retried. A write still under way when the deadline (less the reserve) comes
is cancelled and the caller answered at once, without waiting for the cancelled write to finish
its clean-up (a rollback behind a BEGIN still blocked in SQLite took a quarter of a second under
load, the whole reserve): whether it committed is then unknown, and the row is either in its new
state or still where it was, which the resolver handles like any other unresolved row.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_before_delay,
    wait_exponential_jitter,
)

from sidecar.deadlines import Deadline
from sidecar.keys.fieldcrypt import SealError
from sidecar.store import StoreUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class StoreRetry:
    """How store writes are retried: backoff, and the part of the deadline kept to answer."""

    answer_reserve_seconds: float = 0.25
    initial_backoff_seconds: float = 0.05
    max_backoff_seconds: float = 1.0


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, StoreUnavailable) and not isinstance(exc, SealError)


async def durably(write: Callable[[], Awaitable[T]], deadline: Deadline, retry: StoreRetry) -> T:
    """``write()``, retried while the store is unavailable and ``deadline`` (unbounded: one
    attempt) less the reserve leaves room; the last ``StoreUnavailable`` if it never succeeds."""
    limit = deadline.minus(retry.answer_reserve_seconds)
    room = limit.left()
    if room is None or room <= 0:
        return await write()

    def retrying(state: RetryCallState) -> None:
        log.warning("settlement.store_retry", extra={"attempt": state.attempt_number})

    async for attempt in AsyncRetrying(
        stop=stop_before_delay(room),
        wait=wait_exponential_jitter(
            multiplier=retry.initial_backoff_seconds,
            jitter=retry.initial_backoff_seconds,
            max=retry.max_backoff_seconds,
        ),
        retry=retry_if_exception(_transient),
        before_sleep=retrying,
        reraise=True,
    ):
        with attempt:
            return await _within(write, limit.left() or 0.0)
    raise AssertionError("unreachable: tenacity re-raises the last failure")


async def _within(write: Callable[[], Awaitable[T]], seconds: float) -> T:
    """``write()``, or ``StoreUnavailable`` after ``seconds``: the attempt under way is cancelled
    and left to finish its clean-up (a rollback behind a blocked BEGIN can take a while) on its
    own, so that the caller still gets its answer before its deadline."""
    task = asyncio.ensure_future(write())
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:  # the caller went away: so does the attempt
        task.cancel()
        raise
    if task in done:
        return task.result()
    task.cancel()
    task.add_done_callback(_settled_quietly)
    raise StoreUnavailable("store: still unavailable at the caller's deadline")


def _settled_quietly(task: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned attempt's outcome (cancelled, or the store's error) unlogged."""
    if not task.cancelled():
        task.exception()

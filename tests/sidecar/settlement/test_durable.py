"""State writes retried over a store blip, within the caller's deadline and never beyond it."""

from __future__ import annotations

import asyncio

import pytest

from sidecar.deadlines import NO_DEADLINE, Deadline
from sidecar.keys.fieldcrypt import SealError
from sidecar.settlement.durable import StoreRetry, durably
from sidecar.store import StoreUnavailable

FAST = StoreRetry(
    answer_reserve_seconds=0.05, initial_backoff_seconds=0.01, max_backoff_seconds=0.02
)


class Flaky:
    """A write that fails ``failures`` times with ``error``, then answers."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error or StoreUnavailable("store: down")
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "written"


def deadline_in(seconds: float) -> Deadline:
    return Deadline.after(seconds)


async def test_a_blip_shorter_than_the_deadline_is_retried_through() -> None:
    write = Flaky(3)
    assert await durably(write, deadline_in(5), FAST) == "written"
    assert write.calls == 4


async def test_an_outage_longer_than_the_deadline_gives_up_before_it() -> None:
    write = Flaky(10**6)
    with pytest.raises(StoreUnavailable):
        await durably(write, deadline_in(0.3), FAST)
    assert write.calls > 1


async def test_an_attempt_that_hangs_is_cut_at_the_deadline() -> None:
    async def hangs() -> str:
        await asyncio.sleep(3600)
        return "never"

    with pytest.raises(StoreUnavailable, match="deadline"):
        await durably(hangs, deadline_in(0.2), FAST)


async def test_what_is_not_a_blip_is_not_retried() -> None:
    for error in (SealError("store: a sealed value does not open"), ValueError("bug")):
        write = Flaky(1, error)
        with pytest.raises(type(error)):
            await durably(write, deadline_in(5), FAST)
        assert write.calls == 1


async def test_without_a_deadline_or_time_left_there_is_one_attempt() -> None:
    for deadline in (NO_DEADLINE, deadline_in(0.01), deadline_in(-1)):
        write = Flaky(1)
        with pytest.raises(StoreUnavailable):
            await durably(write, deadline, FAST)
        assert write.calls == 1


async def test_the_answer_does_not_wait_for_the_cut_attempt_to_clean_up() -> None:
    """A write cut at the deadline may need a while to end (SQLite rolls back behind a BEGIN that
    is still blocked): the caller is answered first, and the clean-up still runs to its end."""
    cleaned = asyncio.Event()

    async def blocked() -> str:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.shield(asyncio.sleep(0.3))  # the rollback
            cleaned.set()
            raise
        return "never"

    with pytest.raises(StoreUnavailable, match="deadline"):
        await durably(blocked, deadline_in(0.2), FAST)
    assert not cleaned.is_set()
    await asyncio.wait_for(cleaned.wait(), 10)


async def test_a_caller_that_goes_away_takes_the_attempt_with_it() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def write() -> str:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    caller = asyncio.ensure_future(durably(write, deadline_in(60), FAST))
    await started.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await asyncio.wait_for(cancelled.wait(), 10)

"""State writes retried over a store blip, within the caller's deadline and never beyond it."""

from __future__ import annotations

import asyncio

import pytest

from sidecar.deadlines import NO_DEADLINE, Deadline
from sidecar.fieldcrypt import SealError
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

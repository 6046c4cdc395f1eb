"""Msgid slots leased from the shared store, on SQLite and PostgreSQL: never two holders."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from sidecar.config import MsgIdConfig, StoreConfig
from sidecar.platform.errors import PlatformUnreachable
from sidecar.platform.msgid_lease import (
    MIGRATIONS,
    LeasedMsgIds,
    NoFreeSlot,
    SlotLease,
)
from sidecar.store import Store, StoreError, open_store
from tests.integration.store_outage import store_under_test

INSTITUTION = "H44030500001"
T0 = 1_800_000_000_000_000
TERMS = MsgIdConfig(
    slot="lease", slots=3, lease_seconds=30, renew_seconds=10, lease_safety_seconds=5
)


class Clocks:
    """A replica's wall clock (microseconds) and monotonic clock (seconds), moved by the test."""

    def __init__(self, wall: int = T0) -> None:
        self.wall = wall
        self.mono = 1000.0

    def wall_us(self) -> int:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall += int(seconds * 1_000_000)
        self.mono += seconds


def lease(store: Store, clocks: Clocks, terms: MsgIdConfig = TERMS, holder: str = "") -> SlotLease:
    return SlotLease(
        store,
        INSTITUTION,
        terms,
        holder=holder or None,
        wall_us=clocks.wall_us,
        monotonic=clocks.monotonic,
    )


@pytest.fixture
async def migrated(store: Store) -> Store:
    await store.migrate(MIGRATIONS)
    return store


async def test_replicas_starting_together_get_distinct_slots(
    store_config: StoreConfig, migrated: Store
) -> None:
    replicas = [open_store(store_config) for _ in range(10)]
    terms = MsgIdConfig(slot="lease", slots=10)
    try:
        leases = [SlotLease(r, INSTITUTION, terms) for r in replicas]
        slots = await asyncio.gather(*(one.acquire() for one in leases))
        assert sorted(slots) == list(range(10))
        with pytest.raises(NoFreeSlot):
            await SlotLease(migrated, INSTITUTION, terms).acquire()
        other_institution = SlotLease(migrated, "H11010500001", terms)
        assert await other_institution.acquire() == 0  # slots are per institution
    finally:
        for replica in replicas:
            await replica.close()


async def test_an_expired_lease_is_taken_over_and_its_old_holder_stops(migrated: Store) -> None:
    clocks_a, clocks_b = Clocks(), Clocks()
    terms = MsgIdConfig(
        slot="lease", slots=1, lease_seconds=30, renew_seconds=10, lease_safety_seconds=5
    )
    a, b = lease(migrated, clocks_a, terms), lease(migrated, clocks_b, terms)
    assert await a.acquire() == 0
    with pytest.raises(NoFreeSlot):
        await b.acquire()

    # A cannot renew (say, partitioned from the store); it trusts its lease for 30 - 5 s only.
    clocks_a.advance(24.9)
    assert a.valid_slot() == 0
    clocks_a.advance(0.2)
    assert a.valid_slot() is None

    clocks_b.advance(29.9)  # B's wall clock: the lease has not expired yet
    with pytest.raises(NoFreeSlot):
        await b.acquire()
    clocks_b.advance(0.1)
    assert await b.acquire() == 0  # expired: taken over
    assert b.valid_slot() == 0

    assert not await a.renew()  # A comes back: its lease is gone, it holds nothing
    assert a.valid_slot() is None


async def test_renewal_keeps_the_slot_and_a_clean_stop_frees_it(migrated: Store) -> None:
    clocks = Clocks()
    a = lease(migrated, clocks)
    slot = await a.acquire()
    for _ in range(10):  # far beyond one lease period, renewed in time
        clocks.advance(10)
        assert await a.renew()
        assert a.valid_slot() == slot
    await a.release()
    assert a.valid_slot() is None
    b = lease(migrated, Clocks(clocks.wall))
    assert await b.acquire() == slot  # no wait for expiry


async def test_msgids_come_from_the_leased_share_and_stop_without_a_lease(
    migrated: Store,
) -> None:
    clocks = Clocks()
    terms = MsgIdConfig(slot="lease", slots=4)
    taken = [lease(migrated, clocks, terms) for _ in range(3)]
    for one in taken:
        await one.acquire()
    mine = taken[2]
    assert mine.valid_slot() == 2
    second = dt.datetime(2026, 11, 26, 9, 0, 0)
    times = iter([second - dt.timedelta(seconds=1)])  # the generator's creation second

    def clock() -> dt.datetime:
        return next(times, second)

    ids = LeasedMsgIds(INSTITUTION, mine, clock=clock)
    issued = [await ids.next() for _ in range(5)]
    assert [int(i[-4:]) for i in issued] == [5000, 5001, 5002, 5003, 5004]  # slot 2 of 4
    assert all(i.startswith(INSTITUTION + "20261126090000") for i in issued)

    clocks.mono += terms.lease_seconds  # no renewal: the lease can no longer be trusted
    with pytest.raises(PlatformUnreachable) as refused:
        await ids.next()
    assert refused.value.sent is False and refused.value.retry_after == terms.renew_seconds


async def test_a_store_that_is_down_refuses_renewal_and_the_lease_lapses(
    store_config: StoreConfig, migrated: Store
) -> None:
    clocks = Clocks()
    async with store_under_test(store_config) as backend:
        replica = open_store(backend.config)
        try:
            a = lease(replica, clocks)
            await a.acquire()
            await backend.take_down(replica)
            clocks.advance(TERMS.renew_seconds)
            with pytest.raises(StoreError):
                await a.renew()
            assert a.valid_slot() is not None  # still inside the lease
            clocks.advance(TERMS.lease_seconds - TERMS.lease_safety_seconds - TERMS.renew_seconds)
            assert a.valid_slot() is None  # no msgid from here on
        finally:
            await replica.close()

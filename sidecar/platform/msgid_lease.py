"""Msgid slots leased from the shared store, for replicas of a Deployment (no ordinals).

``[platform.msgid] slot = "lease"``: at start-up the replica takes the lowest free slot of
``slots`` from the table ``msgid_leases`` (institution, slot, holder, expiry), renews it every
``renew_seconds`` and gives it back on a clean stop. A slot whose lease has expired is free for
the next replica that asks (takeover after a crash).

A replica trusts its lease only until ``lease_seconds - lease_safety_seconds`` after it *sent*
its last successful renewal (measured on its monotonic clock); past that it issues no msgid at all
(the call fails with PLATFORM_UNAVAILABLE before anything is sent) rather than risk a duplicate.
Another replica may take the slot once the stored expiry has passed on *its* wall clock, so the two
never overlap while replica clocks differ by less than ``lease_safety_seconds`` minus one second
(the msgid resolution); NTP keeps them well within that.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable

from sidecar.config import MsgIdConfig
from sidecar.platform.envelope import beijing_now
from sidecar.platform.errors import PlatformUnreachable
from sidecar.platform.msgid import MsgIdGenerator
from sidecar.store import Migration, Store, StoreError

log = logging.getLogger(__name__)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        component="msgid",
        version=1,
        statements=(
            """CREATE TABLE msgid_leases (
                institution TEXT NOT NULL,
                slot BIGINT NOT NULL,
                holder TEXT NOT NULL,
                expires_us BIGINT NOT NULL,
                PRIMARY KEY (institution, slot)
            )""",
        ),
    ),
)

_HELD = "SELECT slot, holder, expires_us FROM msgid_leases WHERE institution = :institution"
_TAKE = (
    "INSERT INTO msgid_leases (institution, slot, holder, expires_us)"
    " VALUES (:institution, :slot, :holder, :expires)"
    " ON CONFLICT (institution, slot) DO UPDATE SET holder = :holder, expires_us = :expires"
    " WHERE msgid_leases.expires_us <= :now OR msgid_leases.holder = :holder"
)
_RENEW = (
    "UPDATE msgid_leases SET expires_us = :expires"
    " WHERE institution = :institution AND slot = :slot AND holder = :holder"
    " AND expires_us > :now"
)
_RELEASE = (
    "DELETE FROM msgid_leases WHERE institution = :institution AND slot = :slot"
    " AND holder = :holder"
)


class NoFreeSlot(Exception):
    """Every slot is held by a live lease."""


def _wall_us() -> int:
    return time.time_ns() // 1000


class SlotLease:
    """One replica's lease of a msgid slot of one institution.

    ``terms`` is ``[platform.msgid]`` with ``slot = "lease"``; pydantic has checked that
    ``renew_seconds`` stays below ``lease_seconds - lease_safety_seconds`` and that the safety
    margin is at least 2 s (clock skew plus the msgid's one-second resolution).
    """

    def __init__(
        self,
        store: Store,
        institution: str,
        terms: MsgIdConfig,
        *,
        holder: str | None = None,
        wall_us: Callable[[], int] = _wall_us,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._institution = institution
        self.terms = terms
        self.holder = holder or uuid.uuid4().hex
        self._wall_us = wall_us
        self._monotonic = monotonic
        self._slot: int | None = None
        self._valid_until = float("-inf")
        self._task: asyncio.Task[None] | None = None

    def valid_slot(self) -> int | None:
        """The leased slot while the lease can be trusted, else ``None`` (issue nothing)."""
        if self._slot is None or self._monotonic() >= self._valid_until:
            return None
        return self._slot

    async def acquire(self) -> int:
        """Take the lowest free slot (or keep ours); ``NoFreeSlot``; ``StoreError``."""
        sent = self._monotonic()
        now = self._wall_us()
        expires = now + int(self.terms.lease_seconds * 1_000_000)
        params = {"institution": self._institution, "holder": self.holder}
        async with self._store.transaction() as tx:
            await tx.lock(f"msgid_leases:{self._institution}")
            held = {
                int(row["slot"]): row
                for row in await tx.fetch_all(_HELD, params)
                if row["holder"] != self.holder and int(row["expires_us"]) > now
            }
            mine = [self._slot] if self._slot is not None else []
            candidates = mine + [s for s in range(self.terms.slots) if s not in mine]
            for slot in candidates:
                if slot in held:
                    continue
                taken = await tx.execute(
                    _TAKE, {**params, "slot": slot, "expires": expires, "now": now}
                )
                if taken:
                    self._hold(slot, sent)
                    return slot
        raise NoFreeSlot(f"all {self.terms.slots} msgid slots are leased")

    async def renew(self) -> bool:
        """Extend our lease; ``False`` if it was lost (expired and possibly taken)."""
        if self._slot is None:
            return False
        sent = self._monotonic()
        now = self._wall_us()
        async with self._store.transaction() as tx:
            renewed = await tx.execute(
                _RENEW,
                {
                    "institution": self._institution,
                    "slot": self._slot,
                    "holder": self.holder,
                    "expires": now + int(self.terms.lease_seconds * 1_000_000),
                    "now": now,
                },
            )
        if renewed:
            self._hold(self._slot, sent)
            return True
        self._slot, self._valid_until = None, float("-inf")
        return False

    async def release(self) -> None:
        """Give the slot back (on a clean stop), so a new replica need not wait for expiry."""
        slot, self._slot, self._valid_until = self._slot, None, float("-inf")
        if slot is None:
            return
        async with self._store.transaction() as tx:
            await tx.execute(
                _RELEASE, {"institution": self._institution, "slot": slot, "holder": self.holder}
            )

    async def start(self) -> None:
        """Acquire a slot (start-up fails if none is free) and keep renewing it."""
        slot = await self.acquire()
        log.info("msgid.slot_leased", extra={"slot": slot, "slots": self.terms.slots})
        self._task = asyncio.get_running_loop().create_task(self._keep())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(StoreError):
            await self.release()

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(self.terms.renew_seconds)
            try:
                if not await self.renew():
                    log.warning("msgid.slot_lost")
                    slot = await self.acquire()
                    log.info("msgid.slot_leased", extra={"slot": slot})
            except (StoreError, NoFreeSlot) as exc:
                log.warning("msgid.lease_renewal_failed", extra={"error": type(exc).__name__})

    def _hold(self, slot: int, sent: float) -> None:
        self._slot = slot
        self._valid_until = sent + self.terms.lease_seconds - self.terms.lease_safety_seconds


class LeasedMsgIds:
    """Msgids in the share of the currently leased slot; none at all without a valid lease."""

    def __init__(
        self,
        institution_code: str,
        lease: SlotLease,
        clock: Callable[[], dt.datetime] = beijing_now,
    ) -> None:
        self._institution = institution_code
        self._lease = lease
        self._clock = clock
        self._slot: int | None = None
        self._generator: MsgIdGenerator | None = None

    async def next(self) -> str:
        slot = self._lease.valid_slot()
        if slot is None:
            raise self._refusal()
        if self._generator is None or slot != self._slot:
            self._slot = slot
            self._generator = MsgIdGenerator(
                self._institution, self._clock, slot=slot, slots=self._lease.terms.slots
            )
        msgid = await self._generator.next()
        if self._lease.valid_slot() != slot:  # the lease lapsed while we waited for a second
            raise self._refusal()
        return msgid

    def _refusal(self) -> PlatformUnreachable:
        return PlatformUnreachable(
            "no valid msgid slot lease: not sending",
            sent=False,
            retry_after=self._lease.terms.renew_seconds,
        )

"""The background resolver: settlements whose outcome nobody is waiting for get resolved anyway.

A sidecar that was killed between 2207 and its answer leaves a SENDING row; a call that gave up
within its deadline leaves one too. At start-up and then every
``settlement.resolver_interval_seconds``, this task resolves the rows that no worker holds and
that are older than ``settlement.resolver_min_age_seconds`` (see
:meth:`Settlements.resolve_due`). Failures are logged and tried again on the next round: a store
or platform outage must not stop the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sidecar.config import SettlementConfig
from sidecar.settlement.machine import Settlements

log = logging.getLogger(__name__)


class Resolver:
    def __init__(
        self,
        settlements: Settlements,
        config: SettlementConfig,
        *,
        budget: float = 30.0,
    ) -> None:
        self._settlements = settlements
        self._interval = config.resolver_interval_seconds
        self._min_age = config.resolver_min_age_seconds
        self._budget = budget  # seconds per row
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Run the loop in the background of the running event loop (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="settlement-resolver")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run_once(self) -> int:
        """One round: how many settlements changed state."""
        return await self._settlements.resolve_due(self._min_age, self._budget)

    async def _loop(self) -> None:
        while True:
            try:
                changed = await self.run_once()
                if changed:
                    log.info("settlement.resolver_round", extra={"resolved": changed})
            except Exception as exc:  # keep resolving after any failure, next round
                log.warning("settlement.resolver_failed", extra={"error": type(exc).__name__})
            await asyncio.sleep(self._interval)

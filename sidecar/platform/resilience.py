"""Resilience of the platform link: a circuit breaker, a bound on requests in flight, and
retries for queries.

The breaker (purgatory) counts transport failures of one gateway; business refusals are
answers, not failures, and reset the count. While it is open, requests fail at once with
``PlatformUnreachable(sent=False, retry_after=...)``, so callers get a fast UNAVAILABLE with a
retry hint instead of waiting on a gateway that is down. Retries (tenacity) use exponential
backoff with jitter, only for transactions the caller marks retry-safe (queries), and never
while the breaker is open; the caller's deadline bounds them from outside.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from sidecar.config import ResilienceConfig
from sidecar.observability import instruments
from sidecar.platform.errors import PlatformRefusal, PlatformUnreachable

log = logging.getLogger(__name__)
T = TypeVar("T")


def _retryable(error: BaseException) -> bool:
    return isinstance(error, PlatformUnreachable) and error.retry_after is None


class Guard:
    """Protects one platform gateway; one instance per gateway, shared by all calls.

    ``policy`` is ``[platform.resilience]`` as pydantic validated it.
    """

    def __init__(
        self,
        name: str,
        policy: ResilienceConfig,
        meter: metrics.Meter | None = None,
    ) -> None:
        self._name = name
        self._policy = policy
        self._slots = asyncio.Semaphore(self._policy.max_in_flight)
        self._breakers = AsyncCircuitBreakerFactory(
            default_threshold=self._policy.breaker_failure_threshold,
            default_ttl=self._policy.breaker_open_seconds,
            exclude=[PlatformRefusal],
        )
        self._breakers.add_listener(self._on_event)
        self._state = "closed"
        meter = meter or metrics.NoOpMeter("yibao-sidecar")
        self._retries = meter.create_counter(
            instruments.PLATFORM_RETRIES, description="query retries after no valid answer"
        )
        meter.create_observable_gauge(
            instruments.BREAKER_OPEN,
            callbacks=[self._observe_breaker],
            description="1 while the gateway's circuit breaker is open",
        )

    @property
    def breaker_open(self) -> bool:
        return self._state == "opened"

    @property
    def breaker_state(self) -> str:
        """``closed``, ``half-opened`` or ``opened`` (purgatory's names), for spans."""
        return self._state

    async def guarded(self, send: Callable[[], Awaitable[T]]) -> T:
        """Run ``send`` through the breaker, within the bound on requests in flight."""
        async with self._slots:
            try:
                async with await self._breakers.get_breaker(self._name):
                    return await send()
            except OpenedState as opened:
                retry_after = max(
                    0.0, opened.opened_at + self._policy.breaker_open_seconds - time.time()
                )
                raise PlatformUnreachable(
                    "the platform gateway is failing; the circuit breaker is open",
                    sent=False,
                    retry_after=retry_after,
                ) from None

    def retrying(self, infno: str = "") -> AsyncRetrying:
        """Retry loop for queries: ``async for attempt in guard.retrying(): with attempt: ...``.

        ``infno`` labels the retries counted in ``yibao.platform.retries``.
        """
        labels = {"gateway": self._name, "infno": infno}

        def count_retry(state: RetryCallState) -> None:
            self._retries.add(1, labels)
            log.info("platform.retry", extra={"attempt": state.attempt_number, "infno": infno})

        return AsyncRetrying(
            stop=stop_after_attempt(self._policy.retry_attempts),
            wait=wait_exponential_jitter(
                multiplier=self._policy.retry_initial_backoff_seconds,
                jitter=self._policy.retry_initial_backoff_seconds,
                max=self._policy.retry_max_backoff_seconds,
            ),
            retry=retry_if_exception(_retryable),
            before_sleep=count_retry,
            reraise=True,
        )

    def _on_event(self, name: str, event_type: str, event: Any) -> None:
        if event_type == "state_changed":
            self._state = str(getattr(event, "state", "")) or self._state
            log.warning("platform.breaker", extra={"gateway": name, "state": self._state})

    def _observe_breaker(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(1 if self.breaker_open else 0, {"gateway": self._name})]

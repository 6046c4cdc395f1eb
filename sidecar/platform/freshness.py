"""Replay and freshness checks on the platform's answers.

A signed answer proves who wrote it, not when or for which request. So an answer is refused when
its ``respond_time`` lies outside a window around our clock (an old answer replayed, or a clock so
wrong that nothing can be trusted), or when its ``inf_refmsgid`` (the platform's own message ID)
was already seen on the answer to a *different* request of ours. The same answer to the same
request (the platform's idempotent replay of a resent msgid) is accepted.

Seen IDs are remembered for twice the window: an older replay is refused by its time anyway.
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from collections.abc import Callable

from sidecar.platform.envelope import BEIJING, ResponseEnvelope, beijing_now

PLATFORM_TIME_FORMAT = "%Y%m%d%H%M%S%f"


class StaleAnswer(Exception):
    """The answer is too old, from the future, or a replay of another request's answer."""


class ReplayGuard:
    """Remembers recent ``inf_refmsgid``s and checks answer times against a window."""

    def __init__(
        self,
        window_seconds: float = 300.0,
        *,
        require_time: bool = True,
        clock: Callable[[], dt.datetime] = beijing_now,
        max_remembered: int = 100_000,
    ) -> None:
        self._window = dt.timedelta(seconds=window_seconds)
        self._require_time = require_time
        self._clock = clock
        self._max = max_remembered
        self._seen: OrderedDict[str, tuple[str, dt.datetime]] = OrderedDict()

    def check(self, answer: ResponseEnvelope, msgid: str) -> None:
        """Raise StaleAnswer if ``answer`` to our ``msgid`` is not fresh, or is a replay."""
        now = self._clock()
        if answer.respond_time:
            answered = _platform_time(answer.respond_time)
            if abs(now - answered) > self._window:
                raise StaleAnswer("respond_time is outside the freshness window")
        elif self._require_time:
            raise StaleAnswer("the answer carries no respond_time")
        if not answer.inf_refmsgid:
            return
        self._forget_before(now - 2 * self._window)
        previous = self._seen.get(answer.inf_refmsgid)
        if previous is not None and previous[0] != msgid:
            raise StaleAnswer("inf_refmsgid was already used for another request")
        self._seen[answer.inf_refmsgid] = (msgid, now)
        self._seen.move_to_end(answer.inf_refmsgid)
        while len(self._seen) > self._max:
            self._seen.popitem(last=False)

    def _forget_before(self, cutoff: dt.datetime) -> None:
        while self._seen:
            oldest = next(iter(self._seen.values()))
            if oldest[1] >= cutoff:
                return
            self._seen.popitem(last=False)


def _platform_time(text: str) -> dt.datetime:
    """``yyyyMMddHHmmssSSS`` in Beijing time (the envelope parser checked the shape)."""
    parsed = dt.datetime.strptime(text[:14] + text[14:17].ljust(6, "0"), PLATFORM_TIME_FORMAT)
    return parsed.replace(tzinfo=BEIJING)

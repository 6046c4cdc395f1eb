"""Per-transaction call counts, so tests can assert how often the sidecar reached the platform."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from types import MappingProxyType


class CallCounter:
    """Counts requests per ``infno`` as received (refused ones included)."""

    def __init__(self) -> None:
        self._calls: Counter[str] = Counter()
        self._total = 0

    def record(self, infno: str | None) -> None:
        """Count one request; ``None`` when the body carried no readable ``infno``."""
        self._total += 1
        if infno is not None:
            self._calls[infno] += 1

    def count(self, infno: str) -> int:
        """Requests received for ``infno``."""
        return self._calls[infno]

    @property
    def total(self) -> int:
        """Every request that reached the endpoint, readable or not."""
        return self._total

    def snapshot(self) -> Mapping[str, int]:
        """A read-only copy of the counts per ``infno``."""
        return MappingProxyType(dict(self._calls))

    def reset(self) -> None:
        self._calls.clear()
        self._total = 0

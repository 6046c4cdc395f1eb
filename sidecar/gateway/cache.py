"""A short-lived, in-memory cache of read-only answers (enrollment, account, eligibility).

Entries are keyed by a keyed hash (HMAC-SHA256 under a per-process key) of the data subject's
certificate type and number, never by the number itself, plus a keyed hash of the whole request
and the tenant (so the name, dates and filters of the question are part of the key, and a
cached answer never reaches a caller who asked with another name). Only answers are cached,
never errors. Any mutating call for a subject (a registration here, a settlement, a consent
revocation) calls :meth:`ReadCache.invalidate`, which drops every entry of that subject.

A load that started before an invalidation does not store its answer afterwards (an epoch
counter), so an answer read before a mutation cannot outlive it in the cache. Expiry and the
least-recently-used bound are cachetools' ``TTLCache`` (with the cache's own clock).

Hits and misses are counted on ``yibao.cache.requests`` with attributes ``function`` and
``result`` (``hit`` / ``miss``); with ``ttl_seconds = 0`` the cache is off and counts nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from typing import NamedTuple, Protocol, TypeVar

from cachetools import TTLCache
from google.protobuf.message import Message
from opentelemetry import metrics

from sidecar.config import CacheConfig

M = TypeVar("M", bound=Message)
CACHE_REQUESTS = "yibao.cache.requests"


class SubjectLike(Protocol):
    """Whatever names a person: the cache needs the certificate type and number only."""

    @property
    def certificate_type_code(self) -> str: ...

    @property
    def certificate_number(self) -> str: ...


class _Entry(NamedTuple):
    subject: bytes
    answer: Message


class ReadCache:
    """Answers of read-only RPCs per subject, for ``ttl_seconds``, at most ``max_entries``."""

    def __init__(
        self,
        config: CacheConfig,
        *,
        key: bytes,
        meter: metrics.Meter | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = config.ttl_seconds
        self._max = config.max_entries
        self._key = key
        self._clock = clock
        # TTLCache needs a positive ttl; with 0 the cache is off and this one stays empty.
        self._entries: TTLCache[bytes, _Entry] = TTLCache(
            maxsize=self._max, ttl=self._ttl or 1.0, timer=clock
        )
        self._epoch = 0
        meter = meter or metrics.NoOpMeter("yibao-sidecar")
        self._requests = meter.create_counter(
            CACHE_REQUESTS, unit="1", description="read cache lookups by function and result"
        )

    @property
    def enabled(self) -> bool:
        return self._ttl > 0

    def __len__(self) -> int:
        self._entries.expire()  # expired entries leave on the next write; count only live ones
        return len(self._entries)

    async def read(
        self,
        function: str,
        tenant: str,
        subject: SubjectLike,
        request: Message,
        load: Callable[[], Awaitable[M]],
    ) -> M:
        """The cached answer to ``request``, or ``load()``'s (stored when it succeeds)."""
        if not self.enabled:
            return await load()
        subject_key = self.subject_key(subject)
        key = self._entry_key(function, tenant, subject_key, request)
        entry = self._entries.get(key)  # None once expired
        if entry is not None:
            self._requests.add(1, {"function": function, "result": "hit"})
            return _copy(entry.answer)  # type: ignore[return-value]
        self._requests.add(1, {"function": function, "result": "miss"})
        epoch = self._epoch
        answer = await load()
        if epoch == self._epoch:  # nothing was invalidated while it loaded
            self._entries[key] = _Entry(subject_key, _copy(answer))  # evicts the least recent
        return answer

    def invalidate(self, subject: SubjectLike) -> int:
        """Drop every entry of ``subject`` (all functions, all tenants); how many were dropped."""
        self._epoch += 1
        subject_key = self.subject_key(subject)
        doomed = [key for key, entry in self._entries.items() if entry.subject == subject_key]
        for key in doomed:
            self._entries.pop(key, None)
        return len(doomed)

    def clear(self) -> None:
        self._epoch += 1
        self._entries.clear()

    def subject_key(self, subject: SubjectLike) -> bytes:
        """The keyed hash that stands for the subject in memory (never the number itself)."""
        text = f"subject\x00{subject.certificate_type_code}\x00{subject.certificate_number}"
        return hmac.new(self._key, text.encode(), hashlib.sha256).digest()

    def _entry_key(self, function: str, tenant: str, subject_key: bytes, request: Message) -> bytes:
        mac = hmac.new(self._key, digestmod=hashlib.sha256)
        for part in (function.encode(), tenant.encode(), subject_key):
            mac.update(len(part).to_bytes(4, "big") + part)
        mac.update(request.SerializeToString(deterministic=True))
        return mac.digest()


def _copy(message: Message) -> Message:
    copy = type(message)()
    copy.CopyFrom(message)
    return copy

"""Duplicate ``msgid`` handling: identical resends are replayed, different bodies refused.

The ``msgid`` is the sender's unique message ID. The platform keeps the messages it accepted, so:

* a resend of the **same body** under a msgid already accepted gets the **first answer again**,
  byte for byte, and changes nothing (idempotent replay: a sender that lost an answer may resend
  safely, and a settlement is never charged twice for one msgid);
* a **different body** under a msgid already accepted is refused with
  :data:`~yibao_devkit.simulator.errors.MSGID_DUPLICATE`, and changes nothing.

A message counts as accepted once it passed the envelope, institution, area and sign-in checks
and reached its transaction's handler, whatever the handler answered. Requests refused before that
(malformed envelope, unknown ``infno``, stale sign-in) are not remembered, so the sender may fix
them and resend under the same msgid, as the sidecar does after signing in again.

The log is bounded (oldest forgotten first) so a long load test cannot exhaust memory.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from yibao_devkit.simulator.wire import JsonObject

DEFAULT_CAPACITY = 200_000


@dataclass(frozen=True)
class Accepted:
    """A remembered message: its body's fingerprint and the answer it got."""

    fingerprint: str
    answer: JsonObject


def fingerprint(body: Mapping[str, Any]) -> str:
    """A digest of the decoded body that ignores key order and whitespace."""
    canonical = json.dumps(body, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class MessageLog:
    """The accepted messages, by msgid."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._capacity = capacity
        self._by_msgid: OrderedDict[str, Accepted] = OrderedDict()

    def get(self, msgid: str) -> Accepted | None:
        return self._by_msgid.get(msgid)

    def remember(self, msgid: str, accepted: Accepted) -> None:
        self._by_msgid[msgid] = accepted
        if len(self._by_msgid) > self._capacity:
            self._by_msgid.popitem(last=False)

    def __contains__(self, msgid: object) -> bool:
        return msgid in self._by_msgid

    def __len__(self) -> int:
        return len(self._by_msgid)

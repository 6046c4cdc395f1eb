"""How transactions plug into the simulator: one :class:`Transaction` per ``infno``.

Adding a transaction means writing one handler and registering it. A handler gets the already
validated envelope's ``input`` and a :class:`TransactionContext`; it returns the ``output``
object, or raises :class:`~yibao_devkit.simulator.errors.Refusal` for ``infcode`` -1. Cross-cutting
behaviour (envelope checks, sign-in, counting, msgid replay, fault injection) stays in the app's
single request path, so handlers never repeat it.

Transaction codes are configuration: a region's variant of a code (``2501A``) is an alias that
maps to the same handler (:meth:`TransactionRegistry.alias`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeAlias

from yibao_devkit.simulator.envelope import RequestEnvelope
from yibao_devkit.simulator.state import PlatformState
from yibao_devkit.simulator.wire import JsonObject


@dataclass(frozen=True)
class TransactionContext:
    """What a handler may use besides its input: the envelope, the time, the platform's state."""

    envelope: RequestEnvelope
    now: dt.datetime  # Beijing time at which the platform received the request
    state: PlatformState


Handler: TypeAlias = Callable[[Mapping[str, Any], TransactionContext], JsonObject]


@dataclass(frozen=True)
class Transaction:
    """A transaction code, its name for logs, its handler, and whether it needs a sign-in."""

    infno: str
    name: str
    handler: Handler
    requires_sign_in: bool = True


class TransactionRegistry:
    """The transactions one simulator answers, keyed by ``infno``."""

    def __init__(self, transactions: Iterable[Transaction] = ()) -> None:
        self._by_infno: dict[str, Transaction] = {}
        for transaction in transactions:
            self.register(transaction)

    def register(self, transaction: Transaction) -> None:
        """Add ``transaction``; a second one for the same ``infno`` is a programming error."""
        if transaction.infno in self._by_infno:
            raise ValueError(f"transaction {transaction.infno} is already registered")
        self._by_infno[transaction.infno] = transaction

    def alias(self, code: str, canonical: str) -> None:
        """Answer ``code`` (a region's variant, e.g. ``2501A``) with ``canonical``'s handler.

        The handler sees the code as received in ``ctx.envelope.infno``; the ledger and 2601
        therefore name a settlement by the code its sender used.
        """
        transaction = self._by_infno.get(canonical)
        if transaction is None:
            raise KeyError(f"transaction {canonical} is not registered")
        self.register(replace(transaction, infno=code))

    def get(self, infno: str) -> Transaction | None:
        return self._by_infno.get(infno)

    def __contains__(self, infno: object) -> bool:
        return infno in self._by_infno

    def __iter__(self) -> Iterator[Transaction]:
        return iter(tuple(self._by_infno.values()))

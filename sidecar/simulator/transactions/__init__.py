"""The transactions the simulator answers; each module exports its ``TRANSACTIONS``."""

from __future__ import annotations

from sidecar.simulator.transactions import person, signing
from sidecar.simulator.transactions.registry import (
    Handler,
    Transaction,
    TransactionContext,
    TransactionRegistry,
)

__all__ = [
    "Handler",
    "Transaction",
    "TransactionContext",
    "TransactionRegistry",
    "default_registry",
]


def default_registry() -> TransactionRegistry:
    """A fresh registry with every transaction implemented so far."""
    return TransactionRegistry((*signing.TRANSACTIONS, *person.TRANSACTIONS))

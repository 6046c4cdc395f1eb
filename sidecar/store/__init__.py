"""The shared store: what must outlive a pod (consent, audit trail, settlements, msgid leases).

One seam, two back ends: SQLite (the embedded default, one machine) and PostgreSQL (many replicas
sharing one store). Components own their tables and declare versioned ``Migration``s; the
composition root opens one ``Store`` and applies every component's migrations at start-up.
"""

from sidecar.store.base import (
    DuplicateKey,
    Migration,
    Row,
    Store,
    StoreError,
    StoreUnavailable,
    Tx,
)
from sidecar.store.factory import open_store

__all__ = [
    "DuplicateKey",
    "Migration",
    "Row",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "Tx",
    "open_store",
]

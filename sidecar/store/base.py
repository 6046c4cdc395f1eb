"""The store's contract: transactions, portable SQL with ``:name`` parameters, and errors."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Row = Mapping[str, Any]
Params = Mapping[str, object]
Dialect = Literal["sqlite", "postgresql"]


class StoreError(Exception):
    """A problem with the shared store; ``str()`` is one line without any row content."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or written: callers answer UNAVAILABLE (fail closed)."""


class DuplicateKey(StoreError):
    """A unique constraint refused the row: someone else holds that key."""


class Tx(Protocol):
    """One open transaction."""

    async def execute(self, sql: str, params: Params | None = None) -> int:
        """Run one statement; the number of rows it changed."""
        ...

    async def fetch_one(self, sql: str, params: Params | None = None) -> Row | None: ...

    async def fetch_all(self, sql: str, params: Params | None = None) -> list[Row]: ...

    async def lock(self, name: str) -> None:
        """A lock held until the transaction ends, shared by every replica using the store."""
        ...


class Store(Protocol):
    """A back end: opened lazily, one transaction per ``async with store.transaction()``."""

    dialect: Dialect

    def transaction(self, *, serializable: bool = False) -> AbstractAsyncContextManager[Tx]: ...

    async def migrate(self, migrations: Sequence[Migration]) -> None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class Migration:
    """Version ``version`` of ``component``'s tables.

    Statements are portable SQL; ``{blob}`` is the binary column type (BLOB or BYTEA). Versions of
    one component are applied in order, each once, in the transaction that records it.
    """

    component: str
    version: int
    statements: tuple[str, ...]

    def render(self, dialect: Dialect) -> tuple[str, ...]:
        blob = "BLOB" if dialect == "sqlite" else "BYTEA"
        return tuple(statement.replace("{blob}", blob) for statement in self.statements)


_LEDGER = (
    "CREATE TABLE IF NOT EXISTS store_migrations ("
    " component TEXT NOT NULL, version BIGINT NOT NULL, applied_at BIGINT NOT NULL,"
    " PRIMARY KEY (component, version))"
)


async def apply_migrations(store: Store, migrations: Sequence[Migration]) -> list[Migration]:
    """Apply the migrations this store lacks, under one lock; the ones applied now."""
    plan = _plan(migrations)
    applied: list[Migration] = []
    async with store.transaction() as tx:
        await tx.lock("store_migrations")
        await tx.execute(_LEDGER)
        rows = await tx.fetch_all("SELECT component, version FROM store_migrations")
        have: dict[str, int] = {}
        for row in rows:
            have[row["component"]] = max(have.get(row["component"], 0), int(row["version"]))
        for component, steps in plan.items():
            known = steps[-1].version
            if have.get(component, 0) > known:
                raise StoreError(
                    f"store: schema of {component} is at version {have[component]}, newer than "
                    f"this sidecar knows ({known}); upgrade the sidecar"
                )
            for step in steps:
                if step.version <= have.get(component, 0):
                    continue
                for statement in step.render(store.dialect):
                    await tx.execute(statement)
                await tx.execute(
                    "INSERT INTO store_migrations (component, version, applied_at)"
                    " VALUES (:component, :version, :at)",
                    {"component": component, "version": step.version, "at": now_micros()},
                )
                applied.append(step)
    return applied


def _plan(migrations: Sequence[Migration]) -> dict[str, list[Migration]]:
    plan: dict[str, list[Migration]] = {}
    for migration in sorted(migrations, key=lambda m: (m.component, m.version)):
        plan.setdefault(migration.component, []).append(migration)
    for component, steps in plan.items():
        versions = [step.version for step in steps]
        if versions != list(range(1, len(steps) + 1)):
            raise StoreError(
                f"store: migrations of {component} must be versions 1..n, got {versions}"
            )
    return plan


def now_micros() -> int:
    """Wall-clock time as stored: microseconds since the epoch, UTC."""
    return time.time_ns() // 1000


class LazyOpen:
    """Opens a back end's connection once, on first use, even with concurrent first users."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._opened = False

    async def ensure(self, opener: Any) -> None:
        if self._opened:
            return
        async with self._lock:
            if not self._opened:
                await opener()
                self._opened = True

    def reset(self) -> None:
        self._opened = False

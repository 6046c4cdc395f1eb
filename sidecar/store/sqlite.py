"""SQLite back end: the embedded default for one machine.

One connection (aiosqlite runs it on its own thread) in WAL mode with ``synchronous=FULL``, so a
committed audit record is on disk before the platform is called. Transactions are
``BEGIN IMMEDIATE`` and serialised by a lock: SQLite has one writer anyway, and other processes
(another sidecar on the machine, ``yibao-audit``) wait through ``busy_timeout``.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import aiosqlite

from sidecar.store.base import (
    Dialect,
    DuplicateKey,
    LazyOpen,
    Migration,
    Params,
    Row,
    StoreError,
    StoreUnavailable,
    apply_migrations,
)

# Result codes that mean "the store cannot be used right now", as opposed to a bug in our SQL.
_UNAVAILABLE = (
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
    "SQLITE_IOERR",
    "SQLITE_READONLY",
    "SQLITE_CANTOPEN",
    "SQLITE_FULL",
    "SQLITE_CORRUPT",
    "SQLITE_NOTADB",
    "SQLITE_PROTOCOL",
)


class SqliteStore:
    dialect: Dialect = "sqlite"

    def __init__(self, path: Path, *, busy_timeout_seconds: float = 10.0) -> None:
        self.path = path
        self._busy_timeout_ms = int(busy_timeout_seconds * 1000)
        self._conn: aiosqlite.Connection | None = None
        self._opening = LazyOpen()
        self._lock = asyncio.Lock()

    async def _open(self) -> None:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fresh = not self.path.exists()
            conn = await aiosqlite.connect(self.path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(
                f"store: cannot open SQLite database {self.path}: {_why(exc)}"
            ) from None
        try:
            conn.row_factory = sqlite3.Row
            await conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            await self._enter_wal(conn)
            await conn.execute("PRAGMA synchronous = FULL")
            await conn.execute("PRAGMA foreign_keys = ON")
            if fresh:
                os.chmod(self.path, 0o600)
        except (OSError, sqlite3.Error) as exc:
            await conn.close()
            raise _translate(exc) from None
        self._conn = conn

    async def _enter_wal(self, conn: aiosqlite.Connection) -> None:
        """Switch to WAL; SQLite answers BUSY at once (no busy handler) while another process
        switches or recovers the same file, so wait for it here, within the busy timeout."""
        deadline = asyncio.get_running_loop().time() + self._busy_timeout_ms / 1000
        while True:
            try:
                await conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                busy = (getattr(exc, "sqlite_errorname", "") or "").startswith("SQLITE_BUSY")
                if not busy or asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.02)

    async def _connection(self) -> aiosqlite.Connection:
        await self._opening.ensure(self._open)
        assert self._conn is not None
        return self._conn

    @asynccontextmanager
    async def transaction(self, *, serializable: bool = False) -> AsyncIterator[SqliteTx]:
        # Every SQLite transaction is serialisable: BEGIN IMMEDIATE takes the write lock.
        async with self._lock:
            conn = await self._connection()
            try:
                await conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                await self._after_failure(exc)
                raise _translate(exc) from None
            except asyncio.CancelledError:
                # The BEGIN still runs on aiosqlite's thread; end it before the next user comes.
                await asyncio.shield(_rollback_quietly(conn))
                raise
            try:
                yield SqliteTx(conn)
            except BaseException:
                await asyncio.shield(_rollback_quietly(conn))
                raise
            try:
                await conn.execute("COMMIT")
            except sqlite3.Error as exc:
                with suppress(sqlite3.Error):
                    await conn.execute("ROLLBACK")
                await self._after_failure(exc)
                raise _translate(exc) from None

    async def _after_failure(self, exc: sqlite3.Error) -> None:
        """After an I/O-class failure, reopen on next use: the file may have been repaired."""
        if isinstance(_translate(exc), StoreUnavailable):
            await self.close()

    async def migrate(self, migrations: Sequence[Migration]) -> None:
        await apply_migrations(self, migrations)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        self._opening.reset()
        if conn is not None:
            with suppress(sqlite3.Error, ValueError):
                await conn.close()


async def _rollback_quietly(conn: aiosqlite.Connection) -> None:
    """Roll back whatever is open; nothing to do is fine too."""
    with suppress(sqlite3.Error, ValueError):
        await conn.execute("ROLLBACK")


class SqliteTx:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Params | None = None) -> int:
        try:
            cursor = await self._conn.execute(sql, dict(params or {}))
        except sqlite3.Error as exc:
            raise _translate(exc) from None
        return cursor.rowcount

    async def fetch_one(self, sql: str, params: Params | None = None) -> Row | None:
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None

    async def fetch_all(self, sql: str, params: Params | None = None) -> list[Row]:
        try:
            cursor = await self._conn.execute(sql, dict(params or {}))
            rows = await cursor.fetchall()
        except sqlite3.Error as exc:
            raise _translate(exc) from None
        return [dict(zip(row.keys(), tuple(row), strict=True)) for row in rows]

    async def lock(self, name: str) -> None:
        """Nothing to do: BEGIN IMMEDIATE already holds the database's write lock."""


def _translate(exc: BaseException) -> StoreError | BaseException:
    if isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in str(exc).upper():
        return DuplicateKey("store: duplicate key")
    name = getattr(exc, "sqlite_errorname", "") or ""
    if isinstance(exc, sqlite3.OperationalError | sqlite3.DatabaseError) and name.startswith(
        _UNAVAILABLE
    ):
        return StoreUnavailable(f"store: SQLite unavailable ({name})")
    if isinstance(exc, OSError):
        return StoreUnavailable(f"store: SQLite unavailable ({_why(exc)})")
    return exc


def _why(exc: BaseException) -> str:
    return (
        getattr(exc, "strerror", None)
        or getattr(exc, "sqlite_errorname", None)
        or type(exc).__name__
    )

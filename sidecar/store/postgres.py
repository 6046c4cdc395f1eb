"""PostgreSQL back end: one store shared by many replicas (psycopg 3 and its async pool).

Connections are checked when taken from the pool, so a restarted or cut server costs one failed
transaction (``StoreUnavailable``), not a poisoned pool. Locks named by ``Tx.lock`` are
transaction-scoped advisory locks, visible to every replica.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import psycopg
import psycopg_pool
from psycopg import errors as pg_errors
from psycopg.rows import dict_row

from sidecar.store.base import (
    Dialect,
    DuplicateKey,
    LazyOpen,
    Migration,
    Params,
    Row,
    StoreUnavailable,
    apply_migrations,
)


class PostgresStore:
    dialect: Dialect = "postgresql"

    def __init__(
        self,
        conninfo: str,
        *,
        password: str | None = None,
        pool_size: int = 4,
        connect_timeout_seconds: float = 5.0,
    ) -> None:
        kwargs: dict[str, Any] = {
            "connect_timeout": max(1, round(connect_timeout_seconds)),
            "row_factory": dict_row,
        }
        if password is not None:
            kwargs["password"] = password
        self._timeout = connect_timeout_seconds
        self._pool: psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[dict[str, Any]]] = (
            psycopg_pool.AsyncConnectionPool(
                conninfo,
                kwargs=kwargs,
                min_size=1,
                max_size=pool_size,
                open=False,
                timeout=connect_timeout_seconds,
                check=psycopg_pool.AsyncConnectionPool.check_connection,
            )
        )
        self._opening = LazyOpen()

    async def _open(self) -> None:
        try:
            await self._pool.open(wait=True, timeout=self._timeout)
        except (psycopg_pool.PoolTimeout, psycopg.OperationalError):
            await self._pool.close()
            raise StoreUnavailable("store: cannot connect to PostgreSQL") from None

    @asynccontextmanager
    async def transaction(self, *, serializable: bool = False) -> AsyncIterator[PostgresTx]:
        await self._opening.ensure(self._open)
        with _translated():
            async with self._pool.connection() as conn, conn.transaction():
                if serializable:
                    await conn.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
                yield PostgresTx(conn)

    async def migrate(self, migrations: Sequence[Migration]) -> None:
        await apply_migrations(self, migrations)

    async def close(self) -> None:
        await self._pool.close()
        self._opening.reset()


class PostgresTx:
    def __init__(self, conn: psycopg.AsyncConnection[dict[str, Any]]) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Params | None = None) -> int:
        with _translated():
            cursor = await self._conn.execute(_pyformat(sql), dict(params or {}))
        return cursor.rowcount

    async def fetch_one(self, sql: str, params: Params | None = None) -> Row | None:
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None

    async def fetch_all(self, sql: str, params: Params | None = None) -> list[Row]:
        with _translated():
            cursor = await self._conn.execute(_pyformat(sql), dict(params or {}))
            return list(await cursor.fetchall()) if cursor.description else []

    async def lock(self, name: str) -> None:
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        await self.execute("SELECT pg_advisory_xact_lock(:key)", {"key": key})


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except pg_errors.UniqueViolation:
        raise DuplicateKey("store: duplicate key") from None
    except (psycopg_pool.PoolTimeout, psycopg.OperationalError) as exc:
        raise StoreUnavailable(f"store: PostgreSQL unavailable ({type(exc).__name__})") from None


_TOKEN = re.compile(r"'(?:[^']|'')*'|::|:([A-Za-z_][A-Za-z0-9_]*)|%")


@functools.lru_cache(maxsize=512)
def _pyformat(sql: str) -> str:
    """``:name`` placeholders → psycopg's ``%(name)s``; ``%`` doubled; ``::`` casts kept."""

    def replace(match: re.Match[str]) -> str:
        text = match.group(0)
        if match.group(1):
            return f"%({match.group(1)})s"
        return text.replace("%", "%%")  # psycopg reads % everywhere, string literals included

    return _TOKEN.sub(replace, sql)

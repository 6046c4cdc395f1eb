"""A store that goes away for a few seconds and comes back, for real, touching nobody else.

PostgreSQL: a database of the test's own (``CREATE DATABASE yibao_outage_<random>``, dropped
afterwards) is closed to new connections (``ALLOW CONNECTIONS false``) and its backends, and only
its backends, are terminated; opening it again ends the outage. Other tests' databases, roles and
connections on the same server never notice. SQLite: another connection holds the database's
write lock (``BEGIN EXCLUSIVE``), so every write of the sidecar waits out its busy timeout, fails.
"""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from sidecar.config import StoreConfig
from tests.store_fixtures import postgres_dsn

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@dataclass
class Outage:
    """The store configuration a sidecar uses, and the switch that takes it away."""

    config: StoreConfig
    cut: Callable[[], Awaitable[None]]
    restore: Callable[[], Awaitable[None]]


@contextlib.contextmanager
def _admin() -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    try:
        admin = psycopg.connect(postgres_dsn(), autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is required for this test: {exc}", pytrace=False)
    with admin:
        yield admin


@contextlib.asynccontextmanager
async def store_outage(backend: str, directory: Path) -> AsyncIterator[Outage]:
    """An outage switch for ``backend``; the store's timeouts are short (1 s), as in a test the
    outage should be noticed at once and its end soon after."""
    if backend == "sqlite":
        path = directory / "store" / "sidecar.db"
        holder: list[sqlite3.Connection] = []

        async def lock() -> None:
            conn = sqlite3.connect(path, isolation_level=None)
            conn.execute("BEGIN EXCLUSIVE")
            holder.append(conn)

        async def unlock() -> None:
            while holder:
                conn = holder.pop()
                conn.execute("ROLLBACK")
                conn.close()

        config = StoreConfig(backend="sqlite", sqlite_path=path, connect_timeout_seconds=1.0)
        try:
            yield Outage(config, lock, unlock)
        finally:
            await unlock()
        return
    name = f"yibao_outage_{uuid.uuid4().hex[:12]}"
    with _admin() as admin:
        admin.execute(f"CREATE DATABASE {name}")

        async def close() -> None:
            admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )

        async def reopen() -> None:
            admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")

        dsn = f"{postgres_dsn()} dbname={name}"  # the last dbname wins
        config = StoreConfig(
            backend="postgresql", postgresql_dsn=dsn, pool_size=4, connect_timeout_seconds=1.0
        )
        try:
            yield Outage(config, close, reopen)
        finally:
            admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

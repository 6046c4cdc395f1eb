"""The shared store's contract, on SQLite and on PostgreSQL alike."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.config import StoreConfig
from sidecar.store import DuplicateKey, Migration, Store, StoreError, StoreUnavailable, open_store
from sidecar.store.postgres import _pyformat
from tests.store_fixtures import postgres_dsn

NOTES_V1 = Migration(
    "notes",
    1,
    ("CREATE TABLE notes_items (id TEXT PRIMARY KEY, body {blob} NOT NULL, n BIGINT NOT NULL)",),
)
NOTES_V2 = Migration("notes", 2, ("ALTER TABLE notes_items ADD COLUMN tag TEXT",))


async def _versions(store: Store) -> list[tuple[str, int]]:
    async with store.transaction() as tx:
        rows = await tx.fetch_all("SELECT component, version FROM store_migrations ORDER BY 1, 2")
    return [(row["component"], int(row["version"])) for row in rows]


async def test_migrations_apply_in_order_once(store: Store) -> None:
    await store.migrate([NOTES_V2, NOTES_V1])
    await store.migrate([NOTES_V1, NOTES_V2])  # at the next start: nothing to do
    assert await _versions(store) == [("notes", 1), ("notes", 2)]
    async with store.transaction() as tx:
        await tx.execute(
            "INSERT INTO notes_items (id, body, n, tag) VALUES (:id, :body, :n, :tag)",
            {"id": "a", "body": b"\x00\xff", "n": 2**62, "tag": "x"},
        )
        row = await tx.fetch_one("SELECT body, n, tag FROM notes_items WHERE id = :id", {"id": "a"})
    assert row == {"body": b"\x00\xff", "n": 2**62, "tag": "x"}


async def test_a_schema_newer_than_the_code_is_refused(store: Store) -> None:
    await store.migrate([NOTES_V1, NOTES_V2])
    with pytest.raises(StoreError, match="notes is at version 2, newer than this sidecar knows"):
        await store.migrate([NOTES_V1])


async def test_versions_must_be_contiguous(store: Store) -> None:
    with pytest.raises(StoreError, match=r"versions 1\.\.n, got \[2\]"):
        await store.migrate([NOTES_V2])


async def test_replicas_starting_together_migrate_once(store_config: StoreConfig) -> None:
    replicas = [open_store(store_config) for _ in range(3)]
    try:
        await asyncio.gather(*(r.migrate([NOTES_V1, NOTES_V2]) for r in replicas))
        assert await _versions(replicas[0]) == [("notes", 1), ("notes", 2)]
    finally:
        for r in replicas:
            await r.close()


async def test_an_exception_rolls_the_transaction_back(store: Store) -> None:
    await store.migrate([NOTES_V1])

    async def insert_then_fail() -> None:
        async with store.transaction() as tx:
            await tx.execute(
                "INSERT INTO notes_items (id, body, n) VALUES ('a', :b, 1)", {"b": b"x"}
            )
            raise RuntimeError("caller changed its mind")

    with pytest.raises(RuntimeError):
        await insert_then_fail()
    async with store.transaction() as tx:
        assert await tx.fetch_all("SELECT id FROM notes_items") == []


async def test_a_duplicate_key_is_its_own_error(store: Store) -> None:
    await store.migrate([NOTES_V1])
    insert = "INSERT INTO notes_items (id, body, n) VALUES ('a', :b, 1)"
    async with store.transaction() as tx:
        await tx.execute(insert, {"b": b"x"})
    with pytest.raises(DuplicateKey):
        async with store.transaction() as tx:
            await tx.execute(insert, {"b": b"y"})
    async with store.transaction() as tx:  # the store is still usable, the first row intact
        assert await tx.fetch_one("SELECT body FROM notes_items") == {"body": b"x"}
        changed = await tx.execute(
            "INSERT INTO notes_items (id, body, n) VALUES ('a', :b, 1) ON CONFLICT (id) DO NOTHING",
            {"b": b"z"},
        )
    assert changed == 0


async def test_locked_read_modify_write_loses_no_update(store_config: StoreConfig) -> None:
    """Two replicas incrementing one counter under ``Tx.lock``: every increment counts."""
    replicas = [open_store(store_config) for _ in range(2)]
    try:
        await replicas[0].migrate([NOTES_V1])
        async with replicas[0].transaction() as tx:
            await tx.execute(
                "INSERT INTO notes_items (id, body, n) VALUES ('c', :b, 0)", {"b": b""}
            )

        async def bump(store: Store) -> None:
            async with store.transaction() as tx:
                await tx.lock("counter")
                row = await tx.fetch_one("SELECT n FROM notes_items WHERE id = 'c'")
                assert row is not None
                await asyncio.sleep(0)
                await tx.execute(
                    "UPDATE notes_items SET n = :n WHERE id = 'c'", {"n": row["n"] + 1}
                )

        await asyncio.gather(*(bump(replicas[i % 2]) for i in range(20)))
        async with replicas[1].transaction() as tx:
            assert await tx.fetch_one("SELECT n FROM notes_items WHERE id = 'c'") == {"n": 20}
    finally:
        for r in replicas:
            await r.close()


async def test_an_unopenable_sqlite_file_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "not-a-dir").write_text("")
    store = open_store(StoreConfig(sqlite_path=tmp_path / "not-a-dir" / "sidecar.db"))
    with pytest.raises(StoreUnavailable, match="cannot open SQLite database"):
        async with store.transaction():
            pass
    await store.close()


async def test_a_fresh_sqlite_file_is_private(tmp_path: Path) -> None:
    store = open_store(StoreConfig(sqlite_path=tmp_path / "db" / "sidecar.db"))
    await store.migrate([NOTES_V1])
    await store.close()
    assert (tmp_path / "db" / "sidecar.db").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "db").stat().st_mode & 0o777 == 0o700


@pytest.mark.postgres
async def test_an_unreachable_postgresql_is_unavailable() -> None:
    store = open_store(
        StoreConfig(
            backend="postgresql",
            postgresql_dsn="host=127.0.0.1 port=1 dbname=test user=postgres",
            connect_timeout_seconds=1,
        )
    )
    with pytest.raises(StoreUnavailable, match="cannot connect to PostgreSQL"):
        async with store.transaction():
            pass
    await store.close()


@pytest.mark.postgres
async def test_postgresql_recovers_after_its_connections_are_cut(postgres_schema: str) -> None:
    store = open_store(StoreConfig(backend="postgresql", postgresql_dsn=postgres_schema))
    try:
        await store.migrate([NOTES_V1])
        with psycopg.connect(postgres_dsn(), autocommit=True) as admin:
            cut = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = %s",
                (postgres_schema.rsplit("application_name=", 1)[1],),
            ).fetchone()
        assert cut is not None and cut[0] >= 1
        async with store.transaction() as tx:  # the pool checks and replaces the dead connection
            assert await tx.fetch_all("SELECT id FROM notes_items") == []
    finally:
        await store.close()


def test_postgresql_dsn_must_not_carry_a_password() -> None:
    with pytest.raises(ValueError, match="postgresql_password_file"):
        StoreConfig(backend="postgresql", postgresql_dsn="postgresql://u:secret@db/yibao")


@given(st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True))
def test_placeholders_become_pyformat_and_literals_stay(name: str) -> None:
    sql = f"SELECT ':{name}', x::text, '50%' FROM t WHERE a = :{name} AND b LIKE 'a%'"
    assert _pyformat(sql) == (
        f"SELECT ':{name}', x::text, '50%%' FROM t WHERE a = %({name})s AND b LIKE 'a%%'"
    )


async def test_a_caller_cancelled_while_waiting_to_begin_leaves_no_open_transaction(
    tmp_path: Path,
) -> None:
    """SQLite: cancelled while BEGIN waits for another process's write lock, the BEGIN still
    completes on the driver's thread; the store must end it, or every later BEGIN fails."""
    path = tmp_path / "sidecar.db"
    store = open_store(StoreConfig(sqlite_path=path))
    try:
        await store.migrate([NOTES_V1])
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock

        async def write() -> None:
            async with store.transaction() as tx:
                await tx.execute("INSERT INTO notes_items VALUES ('late', :b, 1)", {"b": b""})

        waiting = asyncio.create_task(write())
        await asyncio.sleep(0.3)  # our BEGIN is now waiting in the busy handler
        waiting.cancel()
        other.execute("ROLLBACK")
        other.close()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        async with store.transaction() as tx:
            await tx.execute("INSERT INTO notes_items VALUES ('next', :b, 1)", {"b": b""})
            assert [r["id"] for r in await tx.fetch_all("SELECT id FROM notes_items")] == ["next"]
    finally:
        await store.close()

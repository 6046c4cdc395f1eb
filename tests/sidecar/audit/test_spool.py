"""Fail closed and lose nothing: the store goes away mid-load and comes back.

The outage is real on both back ends: for PostgreSQL the trail's own login role is refused
(``NOLOGIN``) and its backends terminated with ``pg_terminate_backend``, so every connection
attempt fails until the role is allowed again; for SQLite another connection holds the database's
exclusive lock (the tests run as root, for whom file modes would not make the file unwritable).
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from sidecar.audit.link import build_trail
from sidecar.audit.records import RPC_INTENT, RPC_OUTCOME, TX_INTENT, TX_OUTCOME
from sidecar.audit.schema import MIGRATIONS
from sidecar.audit.trail import AuditTrail
from sidecar.audit.verify import verify_store
from sidecar.audit.writer import AuditUnavailable
from sidecar.store import Store, StoreUnavailable
from sidecar.store.postgres import PostgresStore
from sidecar.store.sqlite import SqliteStore
from tests.audit_fixtures import AuditHsm
from tests.sidecar.audit.conftest import audit_config
from tests.store_fixtures import postgres_dsn


@dataclass
class Outage:
    store: Store
    cut: Callable[[], Awaitable[None]]
    restore: Callable[[], Awaitable[None]]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def outage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Outage]:
    if request.param == "sqlite":
        path = tmp_path / "store" / "sidecar.db"
        store = SqliteStore(path, busy_timeout_seconds=0.05)
        holder: list[sqlite3.Connection] = []

        async def cut() -> None:
            conn = sqlite3.connect(path, isolation_level=None)
            conn.execute("BEGIN EXCLUSIVE")
            holder.append(conn)

        async def restore() -> None:
            conn = holder.pop()
            conn.execute("ROLLBACK")
            conn.close()

        yield Outage(store, cut, restore)
        await store.close()
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    role = f"r_{schema}"
    try:
        admin = psycopg.connect(postgres_dsn(), autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is required for this test: {exc}", pytrace=False)
    admin.execute(f"CREATE ROLE {role} LOGIN")
    admin.execute(f"CREATE SCHEMA {schema} AUTHORIZATION {role}")
    dsn = f"{postgres_dsn()} user={role} options=-csearch_path={schema}"
    dsn = dsn.replace("user=postgres ", "")
    store = PostgresStore(dsn, pool_size=4, connect_timeout_seconds=1)

    async def cut_pg() -> None:
        admin.execute(f"ALTER ROLE {role} NOLOGIN")
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,)
        )

    async def restore_pg() -> None:
        admin.execute(f"ALTER ROLE {role} LOGIN")

    try:
        yield Outage(store, cut_pg, restore_pg)
    finally:
        await store.close()
        admin.execute(f"ALTER ROLE {role} LOGIN")
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.execute(f"DROP ROLE {role}")
        admin.close()


async def rpc(trail: AuditTrail, n: int, gate: asyncio.Event) -> str:
    """One audited RPC with one transaction; waits at ``gate`` between intent and outcome."""
    try:
        audit = await trail.rpc_intent(
            rpc="GetEnrollment", tenant="t", operator="o", subject=b"1:X",
            trace_id="", request=b'{"marker": "PLAINTEXT-MARKER"}',
        )  # fmt: skip
    except AuditUnavailable:
        return "refused"
    try:
        ticket = await trail.intent("1101", f"m{n}", "o", {})
    except AuditUnavailable:
        await trail.rpc_outcome(
            audit, status="UNAVAILABLE", reason="AUDIT_UNAVAILABLE", error="", answer=b""
        )
        return "refused-tx"
    await gate.wait()
    await trail.outcome(ticket, infcode="0", error="", answer={"marker": "PLAINTEXT-MARKER"})
    await trail.rpc_outcome(audit, status="OK", reason="", error="", answer=b"{}")
    return "done"


async def replayed(trail: AuditTrail) -> int:
    """Replay once the store takes connections again (a pool reconnects with backoff)."""
    for _ in range(100):
        try:
            return await trail.writer.replay()
        except StoreUnavailable:
            await asyncio.sleep(0.2)
    raise AssertionError("the store did not come back within 20 s")


@pytest.mark.slow
async def test_outcomes_spool_while_the_store_is_down_and_replay_in_order(
    outage: Outage, audit_hsm: AuditHsm, tmp_path: Path
) -> None:
    await outage.store.migrate(MIGRATIONS)
    trail = build_trail(audit_config(tmp_path), outage.store, audit_hsm.keys)
    await trail.start()
    gate = asyncio.Event()
    in_flight = [asyncio.create_task(rpc(trail, n, gate)) for n in range(20)]
    await asyncio.sleep(0.5)  # every intent of the first wave is durable
    await outage.cut()
    gate.set()
    closed = asyncio.Event()
    closed.set()
    during = [await asyncio.wait_for(rpc(trail, 100 + n, closed), 10) for n in range(5)]
    first_wave = await asyncio.wait_for(asyncio.gather(*in_flight), 20)
    assert first_wave == ["done"] * 20
    assert set(during) == {"refused-tx"}  # nothing would have been sent to the platform
    await trail.writer.flush()
    assert trail.writer.spool.pending > 0  # outcomes (and refused intents) are on disk
    spool = trail.writer.spool
    assert spool.path.stat().st_mode & 0o777 == 0o600
    assert spool.directory.stat().st_mode & 0o777 == 0o700
    assert b"PLAINTEXT-MARKER" not in spool.path.read_bytes()  # payloads stay encrypted
    await outage.restore()
    assert await replayed(trail) > 0
    assert trail.writer.spool.pending == 0
    after = [await rpc(trail, 200 + n, closed) for n in range(3)]
    assert after == ["done"] * 3
    await trail.close()

    async with outage.store.transaction() as tx:
        found = await tx.fetch_all("SELECT seq, content FROM audit_records ORDER BY seq")
    import json

    contents = [json.loads(bytes(row["content"])) for row in found]
    assert [c["seq"] for c in contents] == list(range(len(contents)))  # nothing lost or doubled
    intents = {c["id"] for c in contents if c["kind"] in (RPC_INTENT, TX_INTENT)}
    outcomes = Counter(c["ref"] for c in contents if c["kind"] in (RPC_OUTCOME, TX_OUTCOME))
    assert set(outcomes) == intents and set(outcomes.values()) == {1}
    refused = [c for c in contents if c.get("reason") == "AUDIT_UNAVAILABLE"]
    assert len(refused) == 5
    [report] = await verify_store(outage.store, [audit_hsm.public_key])
    assert report.ok, report.first


async def test_a_spool_left_by_a_dead_process_is_replayed_at_the_next_start(
    outage: Outage, audit_hsm: AuditHsm, tmp_path: Path
) -> None:
    await outage.store.migrate(MIGRATIONS)
    first = build_trail(audit_config(tmp_path), outage.store, audit_hsm.keys)
    await first.start()
    audit = await first.rpc_intent(
        rpc="GetEnrollment", tenant="t", operator="o", subject=b"1:X", trace_id="", request=b"{}"
    )
    await first.writer.flush()
    await outage.cut()
    await first.rpc_outcome(audit, status="OK", reason="", error="", answer=b"{}")
    await first.writer.flush()
    assert first.writer.spool.pending == 1
    # The process dies here: no close, no replay. The store comes back; a new process starts.
    await outage.restore()
    second = build_trail(audit_config(tmp_path), outage.store, audit_hsm.keys)
    for _ in range(100):  # until the store takes connections again
        try:
            await second.start()
            break
        except (AuditUnavailable, StoreUnavailable):
            await asyncio.sleep(0.2)
    await second.close()
    assert not first.writer.spool.path.exists()
    async with outage.store.transaction() as tx:
        found = await tx.fetch_all("SELECT chain, kind FROM audit_records ORDER BY chain, seq")
    by_chain: dict[str, list[str]] = {}
    for row in found:
        by_chain.setdefault(str(row["chain"]), []).append(str(row["kind"]))
    assert by_chain[first.writer.chain] == ["chain.start", "rpc.intent", "rpc.outcome"]
    # The first process died: its chain has no final checkpoint, which verify names ...
    reports = await verify_store(outage.store, [audit_hsm.public_key])
    assert [(r.chain, r.first.kind if r.first else "ok") for r in reports] == sorted(
        [(first.writer.chain, "unfinished"), (second.writer.chain, "ok")]
    )
    # ... and accepts once the operator names it as crashed.
    reports = await verify_store(
        outage.store, [audit_hsm.public_key], open_chains={first.writer.chain}
    )
    assert all(r.ok for r in reports)

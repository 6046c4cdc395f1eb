"""The journal (``[audit] durability = "journal"``): durable on the pod's volume, shipped later.

Fail closed (a journal that cannot be written refuses), nothing lost (what a killed process
journaled is replayed at the next start, exactly once), tamper evident (a changed line is never
shipped as genuine), encrypted at rest (no plaintext on the volume). Both store back ends.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import sidecar.audit.journal as journal_module
from sidecar.audit.link import build_trail
from sidecar.audit.records import TX_INTENT, TX_OUTCOME, Record, chain_hash
from sidecar.audit.schema import MIGRATIONS
from sidecar.audit.spool import decode, encode
from sidecar.audit.trail import AuditTrail
from sidecar.audit.verify import verify_store
from sidecar.audit.writer import AuditUnavailable
from sidecar.config import AuditConfig, StoreConfig
from sidecar.store import Store, open_store
from tests.audit_fixtures import AuditHsm
from tests.sidecar.audit.conftest import audit_config
from tests.sidecar.audit.test_spool import Outage, outage, rpc  # noqa: F401 (fixture)

MARKER = "PLAINTEXT-MARKER"


def journal_config(tmp_path: Path, **changes: object) -> AuditConfig:
    return audit_config(tmp_path, durability="journal", **changes)


def segments(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "spool").glob("*.spool"))


async def stored(store: Store, chain: str | None = None) -> list[dict[str, object]]:
    async with store.transaction() as tx:
        rows = await tx.fetch_all("SELECT content FROM audit_records ORDER BY chain, seq")
    contents = [json.loads(bytes(row["content"])) for row in rows]  # type: ignore[arg-type]
    return [c for c in contents if chain is None or c["chain"] == chain]


async def started(config: AuditConfig, store: Store, hsm: AuditHsm) -> AuditTrail:
    made = build_trail(config, store, hsm.keys)
    await made.start()
    return made


async def test_a_durable_intent_waits_for_the_journal_not_the_store(
    outage: Outage,  # noqa: F811
    audit_hsm: AuditHsm,
    tmp_path: Path,
) -> None:
    """The store goes away: RPCs proceed (their intents are on the volume), nothing is lost."""
    await outage.store.migrate(MIGRATIONS)
    trail = await started(journal_config(tmp_path), outage.store, audit_hsm)
    await trail.writer.flush()
    await outage.cut()
    gate = asyncio.Event()
    gate.set()
    results = [await rpc(trail, n, gate) for n in range(5)]
    assert results == ["done"] * 5
    await trail.writer.flush()  # the store refuses: the records stay journaled
    assert trail.writer.unshipped == 20
    await trail.writer.journal.sync(trail.writer.position)  # type: ignore[union-attr]
    lines = b"".join(path.read_bytes() for path in segments(tmp_path))
    assert lines.count(b"\n") == 21  # chain.start and 5 x 4 records, on the volume
    assert MARKER.encode() not in lines  # encrypted at rest, as in the store
    await outage.restore()
    for _ in range(100):  # until the store takes connections again
        await trail.writer.flush()
        if trail.writer.unshipped == 0:
            break
        await asyncio.sleep(0.2)
    await trail.close()
    assert segments(tmp_path) == []  # a clean stop leaves no journal behind
    contents = await stored(outage.store)
    assert [c["seq"] for c in contents] == list(range(21))
    assert Counter(c["kind"] for c in contents)[TX_OUTCOME] == 5
    [report] = await verify_store(outage.store, [audit_hsm.public_key])
    assert report.ok, report.first


async def test_concurrent_intents_share_fdatasyncs(
    migrated: Store, audit_hsm: AuditHsm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trail = await started(journal_config(tmp_path), migrated, audit_hsm)
    syncs = 0
    real = os.fdatasync

    def counted(fd: int) -> None:
        nonlocal syncs
        syncs += 1
        real(fd)

    monkeypatch.setattr(journal_module.os, "fdatasync", counted)
    tickets = await asyncio.gather(*(trail.intent("1101", f"m{n}", "o", {}) for n in range(40)))
    assert len(tickets) == 40
    assert 1 <= syncs <= 20  # one fdatasync per group, not per intent
    await trail.close()
    assert [c["kind"] for c in await stored(migrated)].count(TX_INTENT) == 40


async def test_an_unwritable_journal_directory_refuses_the_start(
    migrated: Store, audit_hsm: AuditHsm, tmp_path: Path
) -> None:
    (tmp_path / "spool").write_text("not a directory")  # the volume is not what it should be
    trail = build_trail(journal_config(tmp_path), migrated, audit_hsm.keys)
    with pytest.raises(AuditUnavailable, match=r"^audit: spool_dir .*/spool is not a directory$"):
        await trail.start()


async def test_a_journal_that_stops_taking_writes_refuses_every_intent(
    migrated: Store, audit_hsm: AuditHsm, tmp_path: Path
) -> None:
    """The journal's directory is gone (volume lost): the next segment cannot be created."""
    config = journal_config(tmp_path, journal_segment_mib=1)
    trail = await started(config, migrated, audit_hsm)
    journal_dir = tmp_path / "spool"
    for path in segments(tmp_path):
        path.unlink()
    journal_dir.rmdir()
    journal_dir.write_text("the volume is gone")
    refusals: list[str] = []
    for n in range(2000):  # the first segment (1 MiB) fills up: nothing later is written
        try:
            await trail.intent("1101", f"m{n}", "o", {})
        except AuditUnavailable as exc:
            refusals.append(str(exc))
    refused = len(refusals)
    assert 0 < refused < 2000
    assert all("cannot create the journal" in reason for reason in refusals)
    with pytest.raises(AuditUnavailable, match="cannot create the journal"):
        await trail.rpc_intent(
            rpc="GetEnrollment", tenant="t", operator="o", subject=b"1:X", trace_id="", request=b""
        )
    await trail.close()
    assert len([c for c in await stored(migrated) if c["kind"] == TX_INTENT]) == 2000 - refused


async def crashed(config: AuditConfig, store: Store, hsm: AuditHsm, rpcs: int) -> str:
    """A process that journaled ``rpcs`` RPCs and died before shipping them (no close)."""
    trail = await started(config, store, hsm)
    writer = trail.writer
    writer._tasks[0].cancel()  # the shipper never runs: a crash right after the fsync
    gate = asyncio.Event()
    gate.set()
    for n in range(rpcs):
        await rpc(trail, n, gate)
    assert writer.journal is not None
    await writer.journal.sync(writer.position)
    for task in writer._tasks:  # the process dies: its tasks and its file with it
        task.cancel()
    os.close(writer.journal._fd)
    return writer.chain


async def test_a_torn_journal_tail_is_ignored_at_the_next_start(
    migrated: Store, audit_hsm: AuditHsm, tmp_path: Path
) -> None:
    chain = await crashed(journal_config(tmp_path), migrated, audit_hsm, 2)
    [segment] = segments(tmp_path)
    end = segment.read_bytes().rindex(b"\n") + 1
    with segment.open("r+b") as file:  # the process died inside its last write
        file.seek(end)
        file.write(b'{"chain":"x","garbled\xff\x00\x00\n{"chain": "half a li')
    second = await started(journal_config(tmp_path), migrated, audit_hsm)
    await second.close()
    assert segments(tmp_path) == []
    assert [c["seq"] for c in await stored(migrated, chain)] == list(range(9))
    reports = await verify_store(migrated, [audit_hsm.public_key], open_chains={chain})
    assert all(r.ok for r in reports), [r.first for r in reports]


@pytest.mark.parametrize("rehash", [False, True])
async def test_a_changed_journal_line_is_never_shipped_as_genuine(
    migrated: Store, audit_hsm: AuditHsm, tmp_path: Path, rehash: bool
) -> None:
    """An attacker on the volume edits a journaled outcome (infcode 0 -> -1, a refusal).

    Without recomputing the hash the record fails its own hash; with it, the next record no
    longer links to it. Either way the next start refuses, ships nothing of the file, keeps it.
    """
    chain = await crashed(journal_config(tmp_path), migrated, audit_hsm, 1)
    [segment] = segments(tmp_path)
    lines = segment.read_bytes().splitlines(keepends=True)
    target = next(n for n, line in enumerate(lines) if decode(line).kind == TX_OUTCOME)
    record = decode(lines[target])
    content = record.content.replace(b'"infcode":"0"', b'"infcode":"-1"')
    assert content != record.content
    changed = Record(**{**record.__dict__, "content": content})
    if rehash:
        changed = Record(
            **{**changed.__dict__, "hash": chain_hash(record.prev_hash, content, record.payload)}
        )
    lines[target] = encode(changed)
    segment.write_bytes(b"".join(lines))
    before = await stored(migrated, chain)
    second = build_trail(journal_config(tmp_path), migrated, audit_hsm.keys)
    problem = "does not recompute" if not rehash else "does not link to the record before it"
    with pytest.raises(AuditUnavailable) as refused:
        await second.start()
    named = record.seq + 1 if rehash else record.seq
    assert f"record {named} of chain {chain} in the local file is not replayed" in str(
        refused.value
    )
    assert problem in str(refused.value)
    assert "the file is kept" in str(refused.value)
    assert await stored(migrated, chain) == before  # nothing of the file reached the store
    assert segment.exists()


CHILD = """
import asyncio, json, sys
from hsm.token import HsmToken, TokenConfig
from sidecar.audit.hsm_keys import open_audit_keys
from sidecar.audit.link import build_trail
from sidecar.config import AuditConfig, StoreConfig
from sidecar.store import open_store

async def main() -> None:
    args = json.loads(sys.argv[1])
    token = HsmToken.open(TokenConfig(**args["hsm"]))
    store = open_store(StoreConfig.model_validate(args["store"]))
    trail = build_trail(AuditConfig.model_validate(args["audit"]), store, open_audit_keys(token))
    await trail.start()
    for n in range(3):  # these are shipped ...
        await trail.intent("1101", f"shipped{n}", "o", {})
    await trail.writer.flush()
    trail.writer._tasks[0].cancel()  # ... the shipper stops: these stay on the journal only
    for n in range(5):
        await trail.intent("1101", f"journaled{n}", "o", {})
    print(trail.writer.chain, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_a_killed_process_is_replayed_exactly_once_at_the_next_start(
    store_config: StoreConfig, audit_hsm: AuditHsm, tmp_path: Path
) -> None:
    store = open_store(store_config)
    await store.migrate(MIGRATIONS)
    config = journal_config(tmp_path)
    args = {
        "hsm": audit_hsm.hsm_section(),
        "store": store_config.model_dump(mode="json"),
        "audit": config.model_dump(mode="json"),
    }
    child = subprocess.Popen(  # noqa: ASYNC220 (it runs while the test waits for its line)
        [sys.executable, "-c", CHILD, json.dumps(args)],
        stdout=subprocess.PIPE, env=audit_hsm.env(), text=True, cwd=Path(__file__).parents[3],
    )  # fmt: skip
    try:
        assert child.stdout is not None
        chain = await asyncio.to_thread(child.stdout.readline)
        assert chain, "the child did not get to journal its records"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    chain = chain.strip()
    try:
        msgids = [c.get("msgid") for c in await stored(store, chain)]
        assert msgids == [None, "shipped0", "shipped1", "shipped2"]  # the rest: journal only
        second = await started(config, store, audit_hsm)
        await second.close()
        again = await started(config, store, audit_hsm)  # nothing left to replay twice
        await again.close()
        contents = await stored(store, chain)
        assert [c["seq"] for c in contents] == list(range(9))
        assert [c.get("msgid") for c in contents][4:] == [f"journaled{n}" for n in range(5)]
        assert segments(tmp_path) == []
        reports = await verify_store(store, [audit_hsm.public_key], open_chains={chain})
        assert all(r.ok for r in reports), [r.first for r in reports]
    finally:
        await store.close()


def test_the_durability_is_validated() -> None:
    with pytest.raises(ValueError, match="durability"):
        AuditConfig.model_validate({"durability": "memory"})
    with pytest.raises(ValueError, match="journal_segment_mib"):
        AuditConfig.model_validate({"journal_segment_mib": 0})


async def test_records_across_journal_files_are_replayed_in_order(
    migrated: Store, audit_hsm: AuditHsm, tmp_path: Path
) -> None:
    config = journal_config(tmp_path, journal_segment_mib=1)
    chain = await crashed(config, migrated, audit_hsm, 300)  # 1,201 records: over 1 MiB
    assert len([p for p in segments(tmp_path) if p.read_bytes().strip(b"\0")]) >= 2
    second = await started(config, migrated, audit_hsm)
    await second.close()
    assert segments(tmp_path) == []
    assert [c["seq"] for c in await stored(migrated, chain)] == list(range(1201))
    reports = await verify_store(migrated, [audit_hsm.public_key], open_chains={chain})
    assert all(r.ok for r in reports), [r.first for r in reports]


async def test_a_journal_file_is_deleted_once_the_store_holds_it(
    migrated: Store, audit_hsm: AuditHsm, tmp_path: Path
) -> None:
    trail = await started(journal_config(tmp_path, journal_segment_mib=1), migrated, audit_hsm)
    for n in range(2000):  # about two files' worth
        await trail.intent("1101", f"m{n}", "o", {})
        if n % 500 == 0:
            await trail.writer.flush()
    await trail.writer.flush()
    assert trail.writer.journal is not None
    assert len(trail.writer.journal.segments()) == 1  # the full ones were shipped and deleted
    await trail.close()
    assert segments(tmp_path) == []
    assert len(await stored(migrated)) == 2001


@pytest.mark.parametrize("durability", ["store", "journal"])
async def test_close_does_not_hang_when_a_checkpoint_falls_due_as_it_stops(
    migrated: Store, audit_hsm: AuditHsm, tmp_path: Path, durability: str
) -> None:
    """asyncio.wait_for (3.11) swallowed the stop's cancellation when the checkpoint fell due at
    that moment; the checkpoint task then waited for the lock the stop held, forever."""
    config = audit_config(tmp_path, durability=durability, checkpoint_every_records=1)
    trail = await started(config, migrated, audit_hsm)
    await trail.writer.flush()
    await asyncio.sleep(0)
    trail.writer._checkpoint_due.set()  # due now, and the stop comes before the task runs
    closing = asyncio.create_task(trail.close())
    done, _ = await asyncio.wait({closing}, timeout=60)  # a guard against the hang, not a timing
    assert closing in done, "close() hangs"
    reports = await verify_store(migrated, [audit_hsm.public_key])
    assert all(r.ok for r in reports), [r.first for r in reports]

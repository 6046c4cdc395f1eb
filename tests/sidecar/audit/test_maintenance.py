"""Purge (refusal, signed anchor, verifiable after) and data-subject export, on both back ends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sidecar.audit.history import verify_history
from sidecar.audit.hsm_keys import subject_message
from sidecar.audit.link import build_trail
from sidecar.audit.maintenance import DAY_MICROS, PurgeRefused, export_subject, purge
from sidecar.audit.records import EXPORT
from sidecar.audit.verify import verify_store
from sidecar.store import Store
from sidecar.store.base import now_micros
from tests.audit_fixtures import AuditHsm
from tests.sidecar.audit.conftest import audit_config
from tests.sidecar.audit.test_trail import ID_NUMBER, one_rpc

YEAR = 365 * DAY_MICROS


async def old_and_new_chain(store: Store, hsm: AuditHsm, tmp_path: Path) -> str:
    """A chain whose first records are three years old and whose last ones are from today."""
    now = now_micros()
    times = iter([now - 3 * YEAR + n for n in range(10)])  # the registry entry, 9 records
    trail = build_trail(
        audit_config(tmp_path), store, hsm.keys, clock=lambda: next(times, now_micros())
    )
    await trail.start()
    await one_rpc(trail, 0)
    await one_rpc(trail, 1)
    assert await trail.writer.checkpoint()  # seals the old records
    await one_rpc(trail, 2)
    await trail.close()
    return trail.writer.chain


async def test_purge_refuses_anything_younger_than_the_retention(
    migrated: Store, audit_hsm: AuditHsm, tmp_path: Path
) -> None:
    await old_and_new_chain(migrated, audit_hsm, tmp_path)
    now = now_micros()
    with pytest.raises(PurgeRefused, match="730 days"):
        await purge(
            migrated, audit_hsm.keys.signer, [audit_hsm.public_key],
            before=now - 729 * DAY_MICROS, retention_days=730, now=now,
        )  # fmt: skip
    with pytest.raises(PurgeRefused, match="shorter than 730"):
        await purge(
            migrated, audit_hsm.keys.signer, [audit_hsm.public_key],
            before=now - 3000 * DAY_MICROS, retention_days=365, now=now,
        )  # fmt: skip
    async with migrated.transaction() as tx:
        row = await tx.fetch_one("SELECT COUNT(*) AS n FROM audit_records")
    assert row is not None and int(row["n"]) == 13


async def test_purge_leaves_a_signed_anchor_and_the_chain_verifies(
    migrated: Store, audit_hsm: AuditHsm, tmp_path: Path
) -> None:
    chain = await old_and_new_chain(migrated, audit_hsm, tmp_path)
    now = now_micros()
    [done] = await purge(
        migrated, audit_hsm.keys.signer, [audit_hsm.public_key],
        before=now - 2 * YEAR - 30 * DAY_MICROS, retention_days=730, now=now,
    )  # fmt: skip
    assert (done.chain, done.position, done.records) == (chain, 8, 9)
    async with migrated.transaction() as tx:
        seqs = [r["seq"] for r in await tx.fetch_all("SELECT seq FROM audit_records ORDER BY seq")]
        kinds = [r["kind"] for r in await tx.fetch_all(
            "SELECT kind FROM audit_checkpoints ORDER BY number")]  # fmt: skip
    assert seqs == list(range(9, 13))
    assert kinds == ["checkpoint", "final", "anchor"]
    [report] = await verify_store(migrated, [audit_hsm.public_key])
    assert report.ok, report.first
    assert "purged up to position 8" in report.notes[0]
    # Removing a record right after the anchor is still caught.
    async with migrated.transaction() as tx:
        await tx.execute("DELETE FROM audit_records WHERE seq = 9")
    [report] = await verify_store(migrated, [audit_hsm.public_key])
    assert report.first is not None and (report.first.kind, report.first.position) == (
        "removed",
        9,
    )


async def test_a_wholly_purged_chain_is_not_a_deleted_one(
    migrated: Store, audit_hsm: AuditHsm, tmp_path: Path
) -> None:
    """Every record of a closed chain is old: purge removes them all; the registry, the final
    checkpoint and the anchor remain, so the chain and its successor still verify."""
    now = now_micros()
    old = build_trail(
        audit_config(tmp_path), migrated, audit_hsm.keys, clock=lambda: now - 3 * YEAR
    )
    await old.start()
    await one_rpc(old, 0)
    await old.close()
    new = build_trail(audit_config(tmp_path), migrated, audit_hsm.keys)
    await new.start()
    await one_rpc(new, 0)
    await new.close()
    [done] = await purge(
        migrated, audit_hsm.keys.signer, [audit_hsm.public_key],
        before=now - 2 * YEAR - 30 * DAY_MICROS, retention_days=730, now=now,
    )  # fmt: skip
    assert (done.chain, done.position, done.records) == (old.writer.chain, 4, 5)
    history = await verify_history(migrated, [audit_hsm.public_key])
    assert [r.first for r in history.reports()] == [None, None, None]
    purged = history.chains[old.writer.chain]
    assert purged.records == 0 and purged.notes == ["purged up to position 4 (signed anchor)"]
    # Deleting what the purge kept (the checkpoints) is still caught.
    async with migrated.transaction() as tx:
        await tx.execute("DELETE FROM audit_checkpoints WHERE chain = :c", {"c": old.writer.chain})
    history = await verify_history(migrated, [audit_hsm.public_key])
    first = history.chains[old.writer.chain].first
    assert first is not None and first.message == (
        "the whole chain is missing (registry test #0 records its start)"
    )


async def test_export_decrypts_one_subject_and_is_itself_audited(
    migrated: Store, audit_hsm: AuditHsm, tmp_path: Path
) -> None:
    trail = build_trail(audit_config(tmp_path), migrated, audit_hsm.keys)
    await trail.start()
    await one_rpc(trail, 0)
    other = await trail.rpc_intent(
        rpc="GetEnrollment", tenant="acme", operator="bot-1", subject=b"1:110105194912310037",
        trace_id="", request=b'{"certno": "110105194912310037"}',
    )  # fmt: skip
    await trail.rpc_outcome(other, status="OK", reason="", error="", answer=b"{}")
    await trail.close()

    exporter = build_trail(audit_config(tmp_path), migrated, audit_hsm.keys, instance="export")
    await exporter.start()
    rows = await export_subject(
        migrated, audit_hsm.keys.pseudonyms, audit_hsm.keys.data_keys, exporter.writer,
        subject=subject_message(1, ID_NUMBER), requested_by="dpo-01",
    )  # fmt: skip
    await exporter.close()
    assert [r["record"]["kind"] for r in rows] == [
        "rpc.intent", "tx.intent", "tx.outcome", "rpc.outcome"
    ]  # fmt: skip
    assert ID_NUMBER in rows[0]["payload"] and "110105194912310037" not in json.dumps(rows)
    async with migrated.transaction() as tx:
        recorded = await tx.fetch_all(
            "SELECT content FROM audit_records WHERE kind = :k", {"k": EXPORT}
        )
    [entry] = [json.loads(bytes(r["content"])) for r in recorded]
    assert entry["requested_by"] == "dpo-01" and entry["records"] == 4
    assert entry["subject"] == rows[0]["record"]["subject"]
    reports = await verify_store(migrated, [audit_hsm.public_key])
    assert len(reports) == 2 and all(r.ok for r in reports)

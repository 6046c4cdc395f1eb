"""The trail on both back ends: records, encryption, chain, checkpoints, tamper detection."""

from __future__ import annotations

import itertools
import uuid
from pathlib import Path

import pytest

from sidecar.audit import payloads
from sidecar.audit.records import RPC_INTENT, RPC_OUTCOME, TX_INTENT, TX_OUTCOME, Record
from sidecar.audit.trail import AuditTrail
from sidecar.audit.verify import ChainReport, verify_store
from sidecar.store import Store
from tests.audit_fixtures import AuditHsm
from tests.vectors import SM4_GCM

ID_NUMBER = "11010519491231002X"


async def one_rpc(trail: AuditTrail, n: int = 0) -> None:
    audit = await trail.rpc_intent(
        rpc="GetEnrollment",
        tenant="acme",
        operator="bot-1",
        subject=f"1:{ID_NUMBER}".encode(),
        trace_id="ab" * 16,
        request=f'{{"name": "张三", "certno": "{ID_NUMBER}", "n": {n}}}'.encode(),
    )
    ticket = await trail.intent("1101", f"H44030500001{n:018d}", "bot-1", {"certno": ID_NUMBER})
    await trail.outcome(ticket, infcode="0", error="", answer={"balc": "1234.56"})
    await trail.rpc_outcome(audit, status="OK", reason="", error="", answer=b'{"balance": 1}')


async def rows(store: Store) -> list[Record]:
    async with store.transaction() as tx:
        found = await tx.fetch_all("SELECT * FROM audit_records ORDER BY chain, seq")
    return [Record.from_row(row) for row in found]


async def verify(store: Store, hsm: AuditHsm) -> list[ChainReport]:
    """The trail under test is live (not closed): named open, as its operator would."""
    return await verify_store(store, [hsm.public_key], allow_open=True)


async def test_records_are_chained_encrypted_and_verify(
    trail: AuditTrail, migrated: Store, audit_hsm: AuditHsm
) -> None:
    for n in range(3):
        await one_rpc(trail, n)
    assert await trail.writer.checkpoint()
    records = await rows(migrated)
    kinds = [r.kind for r in records]
    assert kinds[1:5] == [RPC_INTENT, TX_INTENT, TX_OUTCOME, RPC_OUTCOME]
    assert [r.seq for r in records] == list(range(len(records)))
    for before, after in itertools.pairwise(records):
        assert after.prev_hash == before.hash
    intent = records[1]
    fields = intent.fields()
    assert fields["tenant"] == "acme" and fields["rpc"] == "GetEnrollment"
    assert len(intent.subject) == 64 and ID_NUMBER not in intent.content.decode()
    assert ID_NUMBER.encode() not in intent.payload
    # The payload decrypts with the data key the record names, unwrapped by the HSM.
    async with migrated.transaction() as tx:
        row = await tx.fetch_one(
            "SELECT wrapped FROM audit_data_keys WHERE key_id = :k", {"k": intent.data_key}
        )
    assert row is not None
    key = await audit_hsm.keys.data_keys.unwrap(bytes(row["wrapped"]))
    plain = payloads.decrypt(key, intent.payload, intent.record_id.encode())
    assert ID_NUMBER.encode() in plain
    with pytest.raises(payloads.PayloadError):
        payloads.decrypt(key, intent.payload, records[2].record_id.encode())
    [report] = await verify(migrated, audit_hsm)
    assert report.ok, report.first
    assert report.sealed_to == records[-1].seq


async def test_the_same_subject_has_the_same_pseudonym(trail: AuditTrail) -> None:
    first, _ = await trail.pseudonym(f"1:{ID_NUMBER}".encode())
    again, _ = await trail.pseudonym(f"1:{ID_NUMBER}".encode())
    other, _ = await trail.pseudonym(b"1:110105194912310037")
    assert first == again != other


def test_sm4_gcm_known_answer() -> None:
    """RFC 8998 appendix A.1 (tests/vectors/sm.json) through the payloads' own cipher."""
    for v in SM4_GCM:
        sealed = v.iv + v.ciphertext + v.tag
        assert payloads.decrypt(v.key, sealed, v.aad) == v.plaintext
        with pytest.raises(payloads.PayloadError):
            payloads.decrypt(v.key, sealed[:-1] + bytes([sealed[-1] ^ 1]), v.aad)
        assert payloads.decrypt(v.key, payloads.encrypt(v.key, v.plaintext, v.aad), v.aad) == (
            v.plaintext
        )


# ---------------------------------------------------------------------- tampering


async def _sealed_chain(trail: AuditTrail, migrated: Store) -> list[Record]:
    for n in range(3):
        await one_rpc(trail, n)
    assert await trail.writer.checkpoint()
    return await rows(migrated)


async def _first(migrated: Store, hsm: AuditHsm) -> tuple[str, int]:
    [report] = await verify(migrated, hsm)
    assert report.first is not None
    return report.first.kind, report.first.position


async def test_a_changed_record_is_named(
    trail: AuditTrail, migrated: Store, audit_hsm: AuditHsm
) -> None:
    records = await _sealed_chain(trail, migrated)
    victim = records[6]
    changed = victim.content.replace(b'"acme"', b'"evil"')
    async with migrated.transaction() as tx:
        await tx.execute(
            "UPDATE audit_records SET content = :c WHERE chain = :chain AND seq = :seq",
            {"c": changed, "chain": victim.chain, "seq": victim.seq},
        )
    assert await _first(migrated, audit_hsm) == ("changed", 6)


async def test_a_rewritten_chain_disagrees_with_its_checkpoint(
    trail: AuditTrail, migrated: Store, audit_hsm: AuditHsm
) -> None:
    """Whoever can write the store can recompute SM3 links, but not the signed checkpoint."""
    from sidecar.audit.records import chain_hash

    records = await _sealed_chain(trail, migrated)
    prev = records[5].hash
    async with migrated.transaction() as tx:
        for record in records[6:]:
            content = record.content.replace(b'"acme"', b'"evil"')
            new_hash = chain_hash(prev, content, record.payload)
            await tx.execute(
                "UPDATE audit_records SET content = :c, prev_hash = :p, hash = :h"
                " WHERE chain = :chain AND seq = :seq",
                {"c": content, "p": prev, "h": new_hash, "chain": record.chain, "seq": record.seq},
            )
            prev = new_hash
    kind, position = await _first(migrated, audit_hsm)
    assert (kind, position) == ("changed", records[-1].seq)


async def test_a_removed_record_is_named(
    trail: AuditTrail, migrated: Store, audit_hsm: AuditHsm
) -> None:
    records = await _sealed_chain(trail, migrated)
    async with migrated.transaction() as tx:
        await tx.execute(
            "DELETE FROM audit_records WHERE chain = :chain AND seq = 4",
            {"chain": records[0].chain},
        )
    assert await _first(migrated, audit_hsm) == ("removed", 4)


async def test_removing_the_tail_is_caught_by_the_checkpoint(
    trail: AuditTrail, migrated: Store, audit_hsm: AuditHsm
) -> None:
    records = await _sealed_chain(trail, migrated)
    last = records[-1].seq
    async with migrated.transaction() as tx:
        await tx.execute(
            "DELETE FROM audit_records WHERE chain = :chain AND seq >= :s",
            {"chain": records[0].chain, "s": last - 1},
        )
    assert await _first(migrated, audit_hsm) == ("removed", last - 1)


async def _renumber(migrated: Store, chain: str, moves: list[tuple[int, int]]) -> None:
    async with migrated.transaction() as tx:
        for old, new in moves:
            await tx.execute(
                "UPDATE audit_records SET seq = :new WHERE chain = :chain AND seq = :old",
                {"new": new, "old": old, "chain": chain},
            )


async def test_reordered_records_are_named(
    trail: AuditTrail, migrated: Store, audit_hsm: AuditHsm
) -> None:
    records = await _sealed_chain(trail, migrated)
    chain = records[0].chain
    await _renumber(migrated, chain, [(3, 1000), (7, 3), (1000, 7)])
    assert await _first(migrated, audit_hsm) == ("reordered", 3)


async def test_an_inserted_record_is_named(
    trail: AuditTrail, migrated: Store, audit_hsm: AuditHsm
) -> None:
    from sidecar.audit.records import Entry, seal_record

    records = await _sealed_chain(trail, migrated)
    chain = records[0].chain
    last = records[-1].seq
    await _renumber(migrated, chain, [(seq, seq + 1) for seq in range(last, 4, -1)])
    forged = seal_record(
        chain=chain,
        seq=5,
        at=records[4].at,
        entry=Entry(RPC_INTENT, uuid.uuid4().hex, {"rpc": "GetEnrollment", "tenant": "evil"}),
        data_key=records[4].data_key,
        payload=b"",
        prev_hash=records[4].hash,
    )
    async with migrated.transaction() as tx:
        await tx.execute(
            "INSERT INTO audit_records (chain, seq, record_id, kind, at, subject, data_key,"
            " content, payload, prev_hash, hash) VALUES (:chain, :seq, :record_id, :kind, :at,"
            " :subject, :data_key, :content, :payload, :prev_hash, :hash)",
            forged.as_row(),
        )
    assert await _first(migrated, audit_hsm) == ("inserted", 5)


async def test_a_forged_checkpoint_is_named(
    trail: AuditTrail, migrated: Store, audit_hsm: AuditHsm
) -> None:
    records = await _sealed_chain(trail, migrated)
    async with migrated.transaction() as tx:
        row = await tx.fetch_one("SELECT content FROM audit_checkpoints WHERE number = 0")
        assert row is not None
        content = bytes(row["content"]).replace(
            records[-1].hash.hex().encode(), records[-2].hash.hex().encode()
        )
        await tx.execute(
            "UPDATE audit_checkpoints SET content = :c, position = :p WHERE number = 0",
            {"c": content.replace(
                f'"position":{records[-1].seq}'.encode(), f'"position":{records[-2].seq}'.encode()
            ), "p": records[-2].seq},
        )  # fmt: skip
    assert await _first(migrated, audit_hsm) == ("forged", 0)


async def test_untouched_chains_verify_on_both_back_ends(
    trail: AuditTrail, migrated: Store, audit_hsm: AuditHsm, tmp_path: Path
) -> None:
    await _sealed_chain(trail, migrated)
    [report] = await verify(migrated, audit_hsm)
    assert report.ok and report.records == 13 and report.checkpoints == 1
    assert report.notes == [
        "open: no final checkpoint, named live or crashed; every record is covered by a signature"
    ]


async def test_data_keys_rotate_on_schedule_and_every_record_names_its_key(
    migrated: Store, audit_hsm: AuditHsm, tmp_path: Path
) -> None:
    from sidecar.audit.link import build_trail
    from tests.sidecar.audit.conftest import audit_config

    trail = build_trail(audit_config(tmp_path, key_rotation_seconds=1), migrated, audit_hsm.keys)
    ring = trail.writer._keys
    now = [0.0]
    ring._clock = lambda: now[0]
    await trail.start()
    await one_rpc(trail, 0)
    now[0] += 1.0  # the rotation interval has passed
    await one_rpc(trail, 1)
    await trail.close()
    records = await rows(migrated)
    used = [r.data_key for r in records]
    assert len(set(used)) == 2 and used[0] == used[4] != used[5] == used[-1]
    async with migrated.transaction() as tx:
        keys = {r["key_id"] for r in await tx.fetch_all("SELECT key_id FROM audit_data_keys")}
    assert set(used) <= keys  # every key a record names is stored (wrapped) before use
    [report] = await verify(migrated, audit_hsm)
    assert report.ok, report.first


async def test_checkpoints_are_also_written_every_n_records(
    migrated: Store, audit_hsm: AuditHsm, tmp_path: Path
) -> None:
    """With an hour between timed checkpoints, a count of 4 still keeps the unsigned tail short."""
    import asyncio

    from sidecar.audit.link import build_trail
    from tests.sidecar.audit.conftest import audit_config

    config = audit_config(tmp_path, checkpoint_every_records=4, commit_delay_seconds=0)
    trail = build_trail(config, migrated, audit_hsm.keys)
    await trail.start()
    for n in range(5):
        await one_rpc(trail, n)  # positions 1..20
    await trail.writer.flush()
    positions: list[int] = []
    for _ in range(500):  # the checkpoint task runs in the background: wait for it, no timing
        async with migrated.transaction() as tx:
            found = await tx.fetch_all("SELECT position FROM audit_checkpoints ORDER BY number")
        positions = [int(row["position"]) for row in found]
        if positions and positions[-1] > 20 - 4:
            break
        await asyncio.sleep(0.01)
    assert positions and positions[-1] > 16, positions  # fewer than 4 records unsigned
    assert all(b - a >= 4 for a, b in itertools.pairwise(positions)), positions
    [report] = await verify(migrated, audit_hsm)
    assert report.ok and report.sealed_to == positions[-1]
    await trail.close()
    [report] = await verify_store(migrated, [audit_hsm.public_key])  # closed: nothing named open
    assert report.ok and report.sealed_to == 20


async def test_a_clean_stop_writes_a_final_checkpoint_that_the_registry_names(
    migrated: Store, audit_hsm: AuditHsm, tmp_path: Path
) -> None:
    import json

    from sidecar.audit.link import build_trail
    from tests.sidecar.audit.conftest import audit_config

    chains = []
    for n in range(2):
        trail = build_trail(audit_config(tmp_path), migrated, audit_hsm.keys)
        await trail.start()
        await one_rpc(trail, n)
        await trail.close()
        await trail.close()  # a second close changes nothing
        chains.append(trail.writer.chain)
    async with migrated.transaction() as tx:
        checkpoints = await tx.fetch_all(
            "SELECT chain, number, kind, position, signature FROM audit_checkpoints"
            " ORDER BY chain, number"
        )
        registry = [
            json.loads(bytes(row["content"]))
            for row in await tx.fetch_all("SELECT content FROM audit_registry ORDER BY number")
        ]
        [start] = await tx.fetch_all(
            "SELECT content FROM audit_records WHERE chain = :c AND seq = 0", {"c": chains[1]}
        )
    finals = {str(r["chain"]): r for r in checkpoints}
    assert [(r["kind"], r["position"]) for r in checkpoints] == [("final", 4), ("final", 4)]
    assert [(e["event"], e["chain"], e["number"]) for e in registry] == [
        ("open", chains[0], 0), ("close", chains[0], 1), ("open", chains[1], 2),
        ("close", chains[1], 3),
    ]  # fmt: skip
    first_final = bytes(finals[chains[0]]["signature"]).hex()
    assert registry[1]["checkpoint_signature"] == first_final
    [last] = [r for r in await rows(migrated) if r.chain == chains[0] and r.seq == 4]
    predecessor = {
        "chain": chains[0], "checkpoint": 0, "signature": first_final,
        "position": 4, "hash": last.hash.hex(),
    }  # fmt: skip
    assert registry[2]["predecessor"] == predecessor
    assert json.loads(bytes(start["content"]))["predecessor"] == predecessor
    assert registry[2]["prev_signature"] != "" and registry[0]["predecessor"] is None
    reports = await verify_store(migrated, [audit_hsm.public_key])
    assert [r.first for r in reports] == [None, None]


async def test_replicas_sharing_an_instance_keep_one_contiguous_registry(
    migrated: Store, audit_hsm: AuditHsm, tmp_path: Path
) -> None:
    """Processes of one instance that start and stop together still get distinct, linked
    registry entries (the registry is written under a store lock)."""
    import asyncio

    from sidecar.audit.history import verify_history
    from sidecar.audit.link import build_trail
    from tests.sidecar.audit.conftest import audit_config

    trails = [
        build_trail(audit_config(tmp_path / str(n)), migrated, audit_hsm.keys) for n in range(4)
    ]
    await asyncio.gather(*(trail.start() for trail in trails))
    await asyncio.gather(*(one_rpc(trail, n) for n, trail in enumerate(trails)))
    await asyncio.gather(*(trail.close() for trail in trails))
    history = await verify_history(migrated, [audit_hsm.public_key])
    assert [r.first for r in history.reports()] == [None] * 5
    [registry] = history.registries
    assert (registry.chain, registry.records) == ("test", 8)

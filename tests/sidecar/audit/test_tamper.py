"""An attacker with write access to the store (no HSM, no audit key) against ``yibao-audit verify``.

Each test starts from the same history on one back end: instance ``test`` ran twice, chain A
then chain B, each 9 records (positions 0-8), checkpoint #0 at position 4 and the final
checkpoint #1 at position 8; the registry holds A open (#0), A close (#1), B open (#2), B close
(#3). Then it tampers the way the attacker can, runs the real CLI and checks the exact line and
exit code. The last tests show the residual limit (the newest, unsigned-by-anything suffix) and
what catches it: a head exported earlier.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sidecar.audit.link import build_trail
from sidecar.audit.records import chain_hash
from sidecar.audit.schema import MIGRATIONS
from sidecar.audit.trail import AuditTrail
from sidecar.config import StoreConfig
from sidecar.store import open_store
from tests.audit_fixtures import AuditHsm
from tests.sidecar.audit.conftest import audit_config
from tests.sidecar.audit.test_cli import run, write_config
from tests.sidecar.audit.test_trail import one_rpc

UNFINISHED = (
    "no final checkpoint (still running, crashed, or its tail was cut); {tail}; "
    "name it with --open-chain if it is live or crashed"
)


@dataclass
class Setup:
    hsm: AuditHsm
    store_config: StoreConfig
    config: Path
    tmp_path: Path
    a: str
    b: str

    async def sql(self, statement: str, params: dict[str, Any] | None = None) -> list[Any]:
        store = open_store(self.store_config)
        try:
            async with store.transaction() as tx:
                if statement.lstrip().upper().startswith("SELECT"):
                    return [dict(row) for row in await tx.fetch_all(statement, params or {})]
                await tx.execute(statement, params or {})
                return []
        finally:
            await store.close()

    def verify(self, *extra: str) -> tuple[int, str]:
        done = run(
            self.hsm, "verify", "--config", str(self.config),
            "--public-key", str(self.hsm.public_key_file), *extra,
        )  # fmt: skip
        assert done.stderr == "", done.stderr
        return done.returncode, done.stdout

    async def key_of(self, chain: str) -> str:
        [row] = await self.sql(
            "SELECT data_key FROM audit_records WHERE chain = :c AND seq = 0", {"c": chain}
        )
        return str(row["data_key"])

    async def registry_signature(self, number: int) -> str:
        [row] = await self.sql(
            "SELECT signature FROM audit_registry WHERE number = :n", {"n": number}
        )
        return bytes(row["signature"]).hex()


async def crash(trail: AuditTrail) -> None:
    """The process dies: its background tasks stop, no final checkpoint is written."""
    await trail.writer.flush()
    for task in trail.writer._tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def run_chain(setup_store: Any, hsm: AuditHsm, tmp_path: Path, *, close: bool = True) -> str:
    trail = build_trail(audit_config(tmp_path), setup_store, hsm.keys)
    await trail.start()
    await one_rpc(trail, 0)
    assert await trail.writer.checkpoint()
    await one_rpc(trail, 1)
    if close:
        await trail.close()
    else:
        await crash(trail)
    return trail.writer.chain


@pytest.fixture
async def setup(store_config: StoreConfig, audit_hsm: AuditHsm, tmp_path: Path) -> Setup:
    store = open_store(store_config)
    try:
        await store.migrate(MIGRATIONS)
        a = await run_chain(store, audit_hsm, tmp_path)
        b = await run_chain(store, audit_hsm, tmp_path)
    finally:
        await store.close()
    config = write_config(tmp_path / "sidecar.toml", audit_hsm, store_config, tmp_path / "spool")
    return Setup(audit_hsm, store_config, config, tmp_path, a, b)


def _lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("FAIL")]


async def test_an_untouched_history_verifies_and_prints_its_heads(setup: Setup) -> None:
    code, out = setup.verify()
    assert code == 0, out
    assert f"ok   chain {setup.a}: 9 records, 2 checkpoints" in out
    assert "ok   registry test: 4 entries" in out
    head = f"head registry test #3 {await setup.registry_signature(3)}"
    assert head in out.splitlines() and out.endswith("2 chains, 0 with problems\n")
    heads = setup.tmp_path / "heads.txt"
    heads.write_text("\n".join(line for line in out.splitlines() if line.startswith("head")))
    assert setup.verify("--expect-head", str(heads))[0] == 0


async def test_a_flipped_payload_byte_is_named(setup: Setup) -> None:
    [row] = await setup.sql(
        "SELECT payload FROM audit_records WHERE chain = :c AND seq = 6", {"c": setup.a}
    )
    payload = bytearray(row["payload"])
    payload[-1] ^= 0x01
    await setup.sql(
        "UPDATE audit_records SET payload = :p WHERE chain = :c AND seq = 6",
        {"p": bytes(payload), "c": setup.a},
    )
    code, out = setup.verify()
    assert (code, _lines(out)) == (1, [f"FAIL changed: chain {setup.a}: record 6 was changed"])


async def test_an_edited_column_is_named(setup: Setup) -> None:
    await setup.sql(
        "UPDATE audit_records SET subject = 'x' WHERE chain = :c AND seq = 3", {"c": setup.b}
    )
    code, out = setup.verify()
    assert (code, _lines(out)) == (
        1,
        [f"FAIL changed: chain {setup.b}: record 3: column subject disagrees with its content"],
    )


async def test_a_deleted_record_is_named(setup: Setup) -> None:
    await setup.sql("DELETE FROM audit_records WHERE chain = :c AND seq = 2", {"c": setup.a})
    code, out = setup.verify()
    assert (code, _lines(out)) == (
        1,
        [f"FAIL removed: chain {setup.a}: record at position 2 is missing"],
    )


async def test_reordered_records_are_named(setup: Setup) -> None:
    for old, new in ((3, 1000), (7, 3), (1000, 7)):
        await setup.sql(
            "UPDATE audit_records SET seq = :new WHERE chain = :c AND seq = :old",
            {"new": new, "old": old, "c": setup.a},
        )
    code, out = setup.verify()
    assert (code, _lines(out)) == (
        1,
        [f"FAIL reordered: chain {setup.a}: position 3 holds record 7"],
    )


async def test_a_tail_cut_at_a_checkpoint_boundary_is_named(setup: Setup) -> None:
    """The final checkpoint and every record after the previous checkpoint are deleted."""
    await setup.sql("DELETE FROM audit_checkpoints WHERE chain = :c AND number = 1", {"c": setup.a})
    await setup.sql("DELETE FROM audit_records WHERE chain = :c AND seq > 4", {"c": setup.a})
    expected = [
        f"FAIL removed: chain {setup.a}: final checkpoint #1 (registry test #1) is missing: "
        "the chain's checkpoints or its tail were deleted"
    ]
    code, out = setup.verify()
    assert (code, _lines(out)) == (1, expected)
    # Naming the chain as crashed does not excuse it: a signed entry says it stopped cleanly.
    code, out = setup.verify("--open-chain", setup.a)
    assert (code, _lines(out)) == (1, expected)
    # Deleting the registry's close entry too breaks the registry's signed links.
    await setup.sql("DELETE FROM audit_registry WHERE number = 1")
    code, out = setup.verify()
    assert (code, _lines(out)) == (
        1,
        [
            f"FAIL removed: chain {setup.a}: checkpoint #1, which the start of chain {setup.b} "
            "names, is missing (the chain's tail or checkpoints were deleted)",
            "FAIL removed: registry test: entry #1 is missing",
        ],
    )


async def test_a_whole_deleted_chain_is_named(setup: Setup) -> None:
    for table in ("audit_records", "audit_checkpoints"):
        await setup.sql(f"DELETE FROM {table} WHERE chain = :c", {"c": setup.a})
    code, out = setup.verify()
    assert (code, _lines(out)) == (
        1,
        [f"FAIL removed: chain {setup.a}: the whole chain is missing (registry test #0 records "
         "its start)"],
    )  # fmt: skip
    # ... and with its registry entries: the next chain's start still names it.
    await setup.sql("DELETE FROM audit_registry WHERE chain = :c", {"c": setup.a})
    code, out = setup.verify()
    assert (code, _lines(out)) == (
        1,
        [
            f"FAIL removed: chain {setup.a}: the whole chain is missing (chain {setup.b} names it)",
            "FAIL removed: registry test: entry #0 is missing",
        ],
    )


async def _rewrite(setup: Setup, chain: str, *, checkpoints: bool = True) -> None:
    """Change a field of records 5-8, recompute every hash, delete all the chain's checkpoints."""
    rows = await setup.sql(
        "SELECT seq, content, payload, prev_hash FROM audit_records WHERE chain = :c ORDER BY seq",
        {"c": chain},
    )
    prev = bytes(rows[5]["prev_hash"])
    for row in rows[5:]:
        content = bytes(row["content"]).replace(b'"acme"', b'"evil"')
        new = chain_hash(prev, content, bytes(row["payload"]))
        await setup.sql(
            "UPDATE audit_records SET content = :t, prev_hash = :p, hash = :h"
            " WHERE chain = :c AND seq = :s",
            {"t": content, "p": prev, "h": new, "c": chain, "s": row["seq"]},
        )
        prev = new
    if checkpoints:
        await setup.sql("DELETE FROM audit_checkpoints WHERE chain = :c", {"c": chain})


async def test_a_consistent_rewrite_with_its_checkpoints_deleted_is_named(setup: Setup) -> None:
    await _rewrite(setup, setup.a)
    code, out = setup.verify()
    assert (code, _lines(out)) == (
        1,
        [
            f"FAIL removed: chain {setup.a}: final checkpoint #1 (registry test #1) is missing: "
            "the chain's checkpoints or its tail were deleted"
        ],
    )


async def test_the_newest_chain_rewritten_without_checkpoints_or_close_is_unfinished(
    setup: Setup,
) -> None:
    await _rewrite(setup, setup.b)
    await setup.sql("DELETE FROM audit_registry WHERE number = 3")
    tail = "positions 0..8 are covered by no checkpoint"
    code, out = setup.verify()
    assert (code, _lines(out)) == (
        1,
        [f"FAIL unfinished: chain {setup.b}: " + UNFINISHED.format(tail=tail)],
    )


async def test_a_deleted_data_key_is_named(setup: Setup) -> None:
    key = await setup.key_of(setup.a)
    await setup.sql("DELETE FROM audit_data_keys WHERE key_id = :k", {"k": key})
    code, out = setup.verify()
    assert (code, _lines(out)) == (
        1,
        [f"FAIL removed: chain {setup.a}: data key {key}, which record 0 needs, is missing"],
    )


@pytest.mark.slow
async def test_data_keys_that_do_not_unwrap_or_open_are_named_with_the_hsm(setup: Setup) -> None:
    a, b = await setup.key_of(setup.a), await setup.key_of(setup.b)
    rows = {
        str(r["key_id"]): bytes(r["wrapped"])
        for r in await setup.sql("SELECT key_id, wrapped FROM audit_data_keys")
    }
    assert setup.verify("--data-keys")[0] == 0
    # Swapped wrapped keys unwrap, but do not open the payloads that name them.
    for key, wrapped in ((a, rows[b]), (b, rows[a])):
        await setup.sql(
            "UPDATE audit_data_keys SET wrapped = :w WHERE key_id = :k", {"w": wrapped, "k": key}
        )
    assert setup.verify()[0] == 0  # without the HSM only presence is checked
    code, out = setup.verify("--data-keys")
    assert (code, sorted(_lines(out))) == (
        1,
        sorted(
            f"FAIL changed: chain {chain}: data key {key} does not open the payload of record 0"
            for chain, key in ((setup.a, a), (setup.b, b))
        ),
    )
    flipped = bytearray(rows[a])
    flipped[-1] ^= 0x01
    await setup.sql(
        "UPDATE audit_data_keys SET wrapped = :w WHERE key_id = :k", {"w": bytes(flipped), "k": a}
    )
    kek = setup.hsm.keys.data_keys.active_kek()
    code, out = setup.verify("--data-keys")
    assert code == 1
    assert (
        f"FAIL changed: chain {setup.a}: data key {a} does not unwrap: data-key blob for {kek} "
        "failed its integrity check (tampered)"
    ) in _lines(out)
    # A blob that names another key of the token (the audit signing key) instead of the KEK.
    audit_label = setup.hsm.keys.audit_key.label.encode()
    renamed = rows[a][:4] + bytes([len(audit_label)]) + audit_label + rows[a][5 + len(kek) :]
    await setup.sql(
        "UPDATE audit_data_keys SET wrapped = :w WHERE key_id = :k", {"w": renamed, "k": a}
    )
    code, out = setup.verify("--data-keys")
    assert code == 1
    assert (
        f"FAIL changed: chain {setup.a}: data key {a} does not unwrap: it names key "
        f"{audit_label.decode()}, which is not a KEK"
    ) in _lines(out)


async def test_a_forged_registry_entry_is_named(setup: Setup) -> None:
    [row] = await setup.sql("SELECT content FROM audit_registry WHERE number = 2")
    content = bytes(row["content"]).replace(b'"predecessor":{', b'"predecessor":{"x":1,')
    await setup.sql("UPDATE audit_registry SET content = :c WHERE number = 2", {"c": content})
    code, out = setup.verify()
    assert (code, _lines(out)) == (
        1,
        ["FAIL forged: registry test: entry #2: signature does not verify"],
    )


async def test_a_crashed_chain_fails_until_the_operator_names_it(
    setup: Setup, store_config: StoreConfig, audit_hsm: AuditHsm, tmp_path: Path
) -> None:
    store = open_store(store_config)
    try:
        c = await run_chain(store, audit_hsm, tmp_path, close=False)
    finally:
        await store.close()
    tail = "positions 5..8 are covered by no checkpoint"
    code, out = setup.verify()
    assert (code, _lines(out)) == (
        1,
        [f"FAIL unfinished: chain {c}: " + UNFINISHED.format(tail=tail)],
    )
    named = f"ok   chain {c}: 9 records, 1 checkpoints (open: no final checkpoint, named live or "
    for flags in (("--open-chain", c), ("--allow-open",)):
        code, out = setup.verify(*flags)
        assert code == 0 and f"{named}crashed; {tail})" in out, out
    [checkpoint] = await setup.sql(
        "SELECT signature FROM audit_checkpoints WHERE chain = :c", {"c": c}
    )
    assert f"head chain {c} #0 {bytes(checkpoint['signature']).hex()}" in out
    code, out = setup.verify("--open-chain", "test/nonexistent")
    assert code == 1 and (
        "FAIL removed: chain test/nonexistent: the whole chain is missing (named by --open-chain)"
    ) in _lines(out)


async def test_the_next_start_seals_a_crashed_chains_tail(
    setup: Setup, store_config: StoreConfig, audit_hsm: AuditHsm, tmp_path: Path
) -> None:
    """A crashed chain's records after its last checkpoint are signed by its successor's start:
    rewriting or cutting them afterwards is caught even when the operator names it crashed."""
    store = open_store(store_config)
    try:
        c = await run_chain(store, audit_hsm, tmp_path, close=False)
        d = await run_chain(store, audit_hsm, tmp_path)
    finally:
        await store.close()
    code, out = setup.verify("--open-chain", c)
    expected = (
        f"ok   chain {c}: 9 records, 1 checkpoints (sealed up to position 8 by the start of "
        f"chain {d}; open: no final checkpoint, named live or crashed; every record is covered "
        "by a signature)"
    )
    assert code == 0 and expected in out.splitlines(), out
    await _rewrite(setup, c, checkpoints=False)  # records 5-8, after its last checkpoint
    code, out = setup.verify("--open-chain", c)
    assert (code, _lines(out)) == (
        1,
        [
            f"FAIL changed: chain {c}: records up to position 8 were rewritten (the start of "
            f"chain {d} sealed another hash)"
        ],
    )
    await setup.sql("DELETE FROM audit_records WHERE chain = :c AND seq > 6", {"c": c})
    code, out = setup.verify("--open-chain", c)
    assert (code, _lines(out)) == (
        1,
        [
            f"FAIL removed: chain {c}: record 8, which the start of chain {d} seals, is missing "
            "(the chain's tail was deleted)"
        ],
    )


async def test_the_residual_limit_and_the_exported_head_that_closes_it(setup: Setup) -> None:
    """Deleting the newest chain with its registry entries leaves nothing signed that names it.

    That suffix is undetectable from the store alone (docs/audit.md); a head exported earlier
    (a line ``verify`` printed) catches it.
    """
    code, out = setup.verify()
    heads = setup.tmp_path / "heads-exported.txt"
    heads.write_text("\n".join(line for line in out.splitlines() if line.startswith("head")))
    for table in ("audit_records", "audit_checkpoints", "audit_registry"):
        await setup.sql(f"DELETE FROM {table} WHERE chain = :c", {"c": setup.b})
    code, out = setup.verify()
    assert code == 0 and out.endswith("1 chains, 0 with problems\n")  # the inherent limit
    signature = heads.read_text().split()[-1]
    code, out = setup.verify("--expect-head", str(heads))
    assert (code, _lines(out)) == (
        1,
        [
            f"FAIL removed: head {signature[:16]}: the signed object this exported head names "
            "is not in the store (history after it was deleted)"
        ],
    )
    assert setup.verify("--expect-head", signature)[0] == 1


async def test_expect_head_must_be_a_signature_or_a_file_of_them(setup: Setup) -> None:
    bad = run(
        setup.hsm, "verify", "--config", str(setup.config),
        "--public-key", str(setup.hsm.public_key_file), "--expect-head", "nothing-here",
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr == (
        "yibao-audit: --expect-head nothing-here: not a signature, and No such file or directory\n"
    )

"""The settlement tables on both store back ends: one claim per key, moves only by the holder."""

from __future__ import annotations

import asyncio

import pytest

from sidecar.settlement.records import MIGRATIONS, LostClaim, Record, SettlementRecords, State
from sidecar.store import Store, StoreError
from sidecar.store.base import now_micros
from tests.fieldcrypt_support import host_sealer


def record(owner: str = "a-1", **changes: object) -> Record:
    now = now_micros()
    values: dict[str, object] = {
        "tenant": "acme",
        "request_id": "r1",
        "payload_sha256": "p" * 64,
        "subject_sha256": "s" * 64,
        "state": State.RUNNING,
        "lease_owner": owner,
        "lease_until": now + 60_000_000,
        "operator": "op",
        "created_at": now,
        "updated_at": now,
        "insurance_type_code": "310",
        "medical_type_code": "11",
        "institution_code": "H44030500001",
        "institution_name": "x",
        "total_fen": 3000,
    }
    values.update(changes)
    return Record(**values)  # type: ignore[arg-type]


async def test_one_claim_wins_among_concurrent_ones(store: Store) -> None:
    await store.migrate(MIGRATIONS)
    records = SettlementRecords(store, host_sealer())
    results = await asyncio.gather(*(records.claim(record(f"w-{n}")) for n in range(10)))
    winners = [n for n, existing in enumerate(results) if existing is None]
    assert len(winners) == 1
    assert {existing.lease_owner for existing in results if existing} == {f"w-{winners[0]}"}


async def test_only_the_holder_moves_a_row_and_takeover_needs_a_dead_lease(store: Store) -> None:
    await store.migrate(MIGRATIONS)
    records = SettlementRecords(store, host_sealer())
    mine = record("a-1")
    assert await records.claim(mine) is None
    theirs = record("b-1")
    assert await records.move(theirs, (State.RUNNING,), State.FAILED) is None
    assert await records.take_over(mine, "b-1", now_micros() + 1) is None  # lease still runs
    sending = await records.record_attempt(
        mine, "M1", "2207", psn_no="P1", insured_area="310000", mdtrt_id="V1"
    )
    assert sending.state is State.SENDING and sending.psn_no == "P1"
    assert [a.msgid for a in await records.attempts(sending)] == ["M1"]
    taken = await records.take_over(sending, "b-1", now_micros() + 1, force=True)
    assert taken is not None and taken.lease_owner == "b-1"
    with pytest.raises(LostClaim):  # the old holder may not send 2207 any more
        await records.record_attempt(
            sending, "M2", "2207", psn_no="P1", insured_area="310000", mdtrt_id="V1"
        )
    done = await records.move(taken, (State.SENDING,), State.REVERSED, lease_until=0)
    assert done is not None and done.state is State.REVERSED
    assert await records.unresolved(now_micros()) == []
    await records.release(done)  # a final row is never given back
    assert await records.get("acme", "r1") == done


async def test_psn_no_is_stored_sealed_and_bound_to_its_row(store: Store) -> None:
    await store.migrate(MIGRATIONS)
    records = SettlementRecords(store, host_sealer())
    psn_no = "43000011000000000077"
    for request_id in ("r1", "r2"):
        mine = record("a-1", request_id=request_id)
        assert await records.claim(mine) is None
        await records.record_attempt(
            mine, f"M-{request_id}", "2207", psn_no=psn_no, insured_area="310000", mdtrt_id="V1"
        )
    async with store.transaction() as tx:
        rows = await tx.fetch_all("SELECT * FROM settlement_records ORDER BY request_id")
    assert [row["psn_no"] for row in rows] == [None, None]  # the plaintext column is not written
    assert all(psn_no.encode() not in bytes(row["psn_no_sealed"]) for row in rows)
    got = await records.get("acme", "r1")
    assert got is not None and got.psn_no == psn_no
    async with store.transaction() as tx:  # r1's sealed value copied onto r2 does not open there
        await tx.execute(
            "UPDATE settlement_records SET psn_no_sealed = :v WHERE request_id = 'r2'",
            {"v": bytes(rows[0]["psn_no_sealed"])},
        )
    with pytest.raises(StoreError):
        await records.get("acme", "r2")


async def test_a_write_repeated_after_an_unacknowledged_commit_changes_nothing(
    store: Store,
) -> None:
    """The machine retries state writes after a store blip; the commit may have landed."""
    await store.migrate(MIGRATIONS)
    records = SettlementRecords(store, host_sealer())
    mine = record("a-1")
    assert await records.claim(mine) is None
    sending, again = [
        await records.record_attempt(
            mine, "M1", "2207", psn_no="P1", insured_area="310000", mdtrt_id="V1"
        )
        for _ in range(2)
    ]
    assert again.state is State.SENDING
    assert [a.msgid for a in await records.attempts(again)] == ["M1"]
    outcome: dict[str, object] = {"lease_until": 0, "setl_id": "S1", "fund_fen": 1000}
    settled = await records.move(sending, (State.SENDING,), State.SETTLED, **outcome)
    assert settled is not None and settled.state is State.SETTLED
    repeated = await records.move(sending, (State.SENDING,), State.SETTLED, **outcome)
    assert repeated is not None and repeated.setl_id == "S1" and repeated.fund_fen == 1000
    # Not the same transition: another outcome, another target, another holder.
    other = {**outcome, "setl_id": "S2"}
    assert await records.move(sending, (State.SENDING,), State.SETTLED, **other) is None
    assert await records.move(sending, (State.SENDING,), State.REVERSED, lease_until=0) is None
    theirs = record("b-1", state=State.SENDING)
    assert await records.move(theirs, (State.SENDING,), State.SETTLED, **outcome) is None
    final = await records.get("acme", "r1")
    assert final is not None and final.state is State.SETTLED and final.setl_id == "S1"


async def test_version_3_blanks_the_unkeyed_digests_of_older_rows(store: Store) -> None:
    """Rows written before digests were keyed held SHA-256 of ``01|`` + the ID number; it
    cannot be re-keyed (the number is gone), so version 3 removes it. Such a row is no longer
    found by subject, and a repeat of its request_id no longer matches its payload."""
    import hashlib

    from sidecar.settlement.records import CancelKey

    await store.migrate(MIGRATIONS[:2])
    records = SettlementRecords(store, host_sealer())
    unkeyed = hashlib.sha256(b"01|110105194912310021").hexdigest()
    assert await records.claim(record(subject_sha256=unkeyed, payload_sha256=unkeyed)) is None
    assert await records.cancel_key("acme", "c1", CancelKey(unkeyed, "r1")) is None
    await store.migrate(MIGRATIONS)
    old = await records.get("acme", "r1")
    assert old is not None and (old.subject_sha256, old.payload_sha256) == ("", "")
    again = await records.cancel_key("acme", "c1", CancelKey("k" * 64, "r1"))
    assert again == CancelKey("", "r1")
    async with store.transaction() as tx:
        rows = await tx.fetch_all(
            "SELECT payload_sha256 AS d FROM settlement_cancel_keys"
            " UNION ALL SELECT subject_sha256 FROM settlement_records"
            " UNION ALL SELECT payload_sha256 FROM settlement_records"
        )
    assert unkeyed not in {row["d"] for row in rows}

"""The registration family's idempotency keys on both store back ends."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from sidecar import errors
from sidecar._proto.yibao.gateway.v1 import gateway_pb2 as gateway
from sidecar.compliance.pseudonyms import HostPseudonymizer
from sidecar.config import OffsiteConfig
from sidecar.errors import GatewayError
from sidecar.gateway.offsite_store import (
    MIGRATIONS,
    ClaimKind,
    OffsiteStore,
    Outcome,
    RequestKey,
    request_key,
)
from sidecar.store import Store, StoreError
from tests.fieldcrypt_support import host_sealer

DIGESTS = HostPseudonymizer(b"offsite-test-key")


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


KEY = RequestKey("acme", "SubmitOffsiteRegistration", "req-1", b"a")


async def keys(store: Store, clock: Clock) -> OffsiteStore:
    await store.migrate(MIGRATIONS)
    await store.migrate(MIGRATIONS)  # idempotent
    config = OffsiteConfig(request_lease_seconds=10.0)
    return OffsiteStore(store, config, sealer=host_sealer(), digests=DIGESTS, clock=clock)


async def test_claim_finish_and_replay(store: Store) -> None:
    clock = Clock()
    offsite = await keys(store, clock)
    assert (await offsite.claim(KEY)).kind is ClaimKind.FRESH
    answer = gateway.SubmitOffsiteRegistrationResponse()
    answer.registration.registration_id = "R1"
    await offsite.mark_sent(KEY)
    await offsite.finish(KEY, Outcome(answer=answer.SerializeToString()))
    replay = await offsite.claim(KEY)
    assert replay.kind is ClaimKind.REPLAY and replay.outcome is not None
    assert replay.outcome.answer == answer.SerializeToString()
    with pytest.raises(GatewayError) as caught:
        await offsite.claim(RequestKey(KEY.tenant, KEY.method, KEY.request_id, b"b"))
    assert caught.value.reason == "IDEMPOTENCY_KEY_REUSED"
    # keys are per tenant and per method
    assert (await offsite.claim(RequestKey("other", KEY.method, "req-1", b"b"))).kind is (
        ClaimKind.FRESH
    )
    cancel = RequestKey(KEY.tenant, "CancelOffsiteRegistration", "req-1", b"b")
    assert (await offsite.claim(cancel)).kind is ClaimKind.FRESH


async def test_a_refusal_is_replayed_verbatim(store: Store) -> None:
    offsite = await keys(store, Clock())
    await offsite.claim(KEY)
    refusal = errors.platform_refused("-1", "备案地区暂停办理")
    await offsite.finish(KEY, Outcome(error=refusal))
    replay = await offsite.claim(KEY)
    assert replay.outcome is not None and replay.outcome.error == refusal


async def test_leases_free_and_release(store: Store) -> None:
    clock = Clock()
    offsite = await keys(store, clock)
    await offsite.claim(KEY)
    with pytest.raises(GatewayError) as caught:
        await offsite.claim(KEY)
    assert caught.value.code == grpc.StatusCode.ABORTED
    assert caught.value.reason == "REQUEST_IN_PROGRESS" and caught.value.retry_after_seconds
    await offsite.free(KEY)  # nothing sent: forgotten
    assert (await offsite.claim(KEY)).kind is ClaimKind.FRESH
    await offsite.mark_sent(KEY)
    sent_at = clock.now
    clock.now += 5
    await offsite.free(KEY)  # sent: kept, to be resolved
    resolve = await offsite.claim(KEY)
    assert resolve.kind is ClaimKind.RESOLVE and resolve.sent_at == pytest.approx(sent_at)
    await offsite.release(KEY)  # the resend did not go out
    assert (await offsite.claim(KEY)).kind is ClaimKind.FRESH
    clock.now += 11  # a crashed holder's lease runs out
    assert (await offsite.claim(KEY)).kind is ClaimKind.FRESH


async def test_concurrent_claims_have_one_winner(store: Store) -> None:
    offsite = await keys(store, Clock())
    results = await asyncio.gather(*(offsite.claim(KEY) for _ in range(20)), return_exceptions=True)
    winners = [r for r in results if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, GatewayError)]
    assert len(winners) == 1 and len(losers) == 19
    assert {loser.reason for loser in losers} == {"REQUEST_IN_PROGRESS"}


async def test_submission_times(store: Store) -> None:
    offsite = await keys(store, Clock())
    await offsite.record_submission("acme", "R1", 1_800_000_000.25)
    await offsite.record_submission("acme", "R1", 1_800_000_999.0)  # first one stays
    assert await offsite.submit_times("acme", ["R1", "R2"]) == {"R1": 1_800_000_000.25}
    assert await offsite.submit_times("other", ["R1"]) == {}


def test_the_payload_ignores_the_request_id_only() -> None:
    one = gateway.SubmitOffsiteRegistrationRequest(request_id="a", address="x")
    two = gateway.SubmitOffsiteRegistrationRequest(request_id="b", address="x")
    three = gateway.SubmitOffsiteRegistrationRequest(request_id="a", address="y")
    k1, k2, k3 = (request_key("t", "M", r) for r in (one, two, three))
    assert k1.payload == k2.payload != k3.payload
    assert "payload" not in repr(k1)
    assert (k1.request_id, k2.request_id) == ("a", "b")


async def test_finished_keys_are_purged_after_the_retention_only(store: Store) -> None:
    clock = Clock()
    await store.migrate(MIGRATIONS)
    offsite = OffsiteStore(
        store,
        OffsiteConfig(request_lease_seconds=10.0, keep_request_ids_hours=24),
        sealer=host_sealer(),
        digests=DIGESTS,
        clock=clock,
    )
    unknown = RequestKey("acme", "SubmitOffsiteRegistration", "req-2", b"a")
    await offsite.claim(KEY)
    await offsite.finish(KEY, Outcome(answer=b""))
    await offsite.claim(unknown)
    await offsite.mark_sent(unknown)
    await offsite.free(unknown)
    clock.now += 86_399
    assert await offsite.purge() == 0
    clock.now += 2
    assert await offsite.purge() == 1
    assert (await offsite.claim(KEY)).kind is ClaimKind.FRESH  # forgotten
    assert (await offsite.claim(unknown)).kind is ClaimKind.RESOLVE  # never dropped


async def test_outcomes_are_stored_sealed_and_bound_to_their_key(store: Store) -> None:
    offsite = await keys(store, Clock())
    answer = "13800138000 北京市海淀区中关村大街1号".encode()
    other = RequestKey("acme", "SubmitOffsiteRegistration", "req-9", b"a")
    for key in (KEY, other):
        await offsite.claim(key)
        await offsite.finish(key, Outcome(answer=answer))
    async with store.transaction() as tx:
        rows = await tx.fetch_all("SELECT request_id, outcome FROM offsite_requests")
    assert len(rows) == 2 and all(answer[:11] not in bytes(row["outcome"]) for row in rows)
    replay = await offsite.claim(KEY)
    assert replay.outcome is not None and replay.outcome.answer == answer
    sealed = {row["request_id"]: bytes(row["outcome"]) for row in rows}
    async with store.transaction() as tx:  # req-1's outcome copied onto req-9 does not open there
        await tx.execute(
            "UPDATE offsite_requests SET outcome = :v WHERE request_id = 'req-9'",
            {"v": sealed["req-1"]},
        )
    with pytest.raises(StoreError):
        await offsite.claim(other)


async def test_version_2_blanks_unkeyed_payload_digests_and_the_old_key_is_not_replayed(
    store: Store,
) -> None:
    """A row of version 1 held SHA-256 of the payload (ID number, name, phone): version 2 drops
    it, and a repeat of that request_id is refused rather than answered from a digest nobody
    can check any more. New keys store keyed digests only."""
    import hashlib

    await store.migrate(MIGRATIONS[:1])
    request = gateway.SubmitOffsiteRegistrationRequest(request_id="old-1", contact_phone="1391")
    key = request_key("acme", "SubmitOffsiteRegistration", request)
    unkeyed = hashlib.sha256(key.payload).hexdigest()
    async with store.transaction() as tx:
        await tx.execute(
            "INSERT INTO offsite_requests (tenant, method, request_id, payload_sha256, state,"
            " sent, sent_at, lease_until, outcome, created_at, updated_at)"
            " VALUES ('acme', 'SubmitOffsiteRegistration', 'old-1', :d, 'done', 1, 1, 0,"
            " NULL, 1, 1)",
            {"d": unkeyed},
        )
    offsite = await keys(store, Clock())
    with pytest.raises(GatewayError) as caught:
        await offsite.claim(key)
    assert caught.value.reason == "IDEMPOTENCY_KEY_REUSED"
    fresh = request_key(
        "acme",
        "SubmitOffsiteRegistration",
        gateway.SubmitOffsiteRegistrationRequest(request_id="new-1", contact_phone="1391"),
    )
    assert (await offsite.claim(fresh)).kind is ClaimKind.FRESH
    async with store.transaction() as tx:
        digests = {
            row["request_id"]: row["payload_sha256"]
            for row in await tx.fetch_all("SELECT request_id, payload_sha256 FROM offsite_requests")
        }
    assert digests["old-1"] == ""
    assert digests["new-1"] == await DIGESTS.digest(
        "offsite-payload:SubmitOffsiteRegistration", fresh.payload
    )
    assert (
        unkeyed not in digests.values()
        and hashlib.sha256(fresh.payload).hexdigest() not in digests.values()
    )

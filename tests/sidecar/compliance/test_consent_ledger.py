"""The consent ledger on both store back ends, with a clock the test moves: expiry and states."""

from __future__ import annotations

import pytest

from sidecar.compliance.consent_ledger import (
    MIGRATIONS,
    ConsentLedger,
    ConsentState,
    IdempotencyKeyReused,
    NewConsent,
    RequestKey,
)
from sidecar.compliance.pseudonyms import HostPseudonymizer
from sidecar.store import Store

T0 = 1_800_000_000_000_000  # microseconds
SECOND = 1_000_000


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


def new(subject: str, purpose: str = "PURPOSE_SETTLEMENT", expire: int | None = None) -> NewConsent:
    return NewConsent(
        tenant="acme-corp",
        subject=subject,
        certificate_type="CERTIFICATE_TYPE_RESIDENT_ID_CARD",
        purpose=purpose,
        scope="结算",
        notice_version="v1",
        notice_sm3_hex="ab" * 32,
        channel_evidence="im-msg-1",
        operator="im-bot-01",
        expire_time_us=expire,
    )


@pytest.fixture
async def ledger(store: Store) -> ConsentLedger:
    await store.migrate(MIGRATIONS)
    return ConsentLedger(store, clock=Clock())


async def test_a_consent_expires_at_its_expire_time_without_any_job(ledger: ConsentLedger) -> None:
    clock = ledger.clock
    assert isinstance(clock, Clock)
    async with ledger.store.transaction() as tx:
        record = await ledger.grant(tx, new("p1", expire=T0 + 10 * SECOND))
    assert await ledger.is_active("acme-corp", "p1", "PURPOSE_SETTLEMENT")
    assert not await ledger.is_active("acme-corp", "p1", "PURPOSE_ACCOUNT_QUERY")
    assert not await ledger.is_active("other", "p1", "PURPOSE_SETTLEMENT")
    clock.now = T0 + 10 * SECOND - 1
    assert await ledger.is_active("acme-corp", "p1", "PURPOSE_SETTLEMENT")
    clock.now = T0 + 10 * SECOND  # the expiry instant itself is past
    assert not await ledger.is_active("acme-corp", "p1", "PURPOSE_SETTLEMENT")
    assert record.state_at(clock.now) is ConsentState.EXPIRED

    page, _ = await ledger.page(
        "acme-corp", "p1", purpose=None, states=[ConsentState.EXPIRED], after=None, limit=10
    )
    assert [r.consent_id for r in page] == [record.consent_id]
    # Revoking an expired consent leaves it as it is.
    async with ledger.store.transaction() as tx:
        again = await ledger.revoke(tx, "acme-corp", record.consent_id, "op")
        swept = await ledger.revoke_all(tx, "acme-corp", "p1", "PURPOSE_SETTLEMENT", "op")
    assert again == record and swept == []


async def test_revocation_is_recorded_not_deleted(ledger: ConsentLedger) -> None:
    async with ledger.store.transaction() as tx:
        record = await ledger.grant(tx, new("p2"))
    assert isinstance(ledger.clock, Clock)
    ledger.clock.now += 5 * SECOND
    async with ledger.store.transaction() as tx:
        revoked = await ledger.revoke(tx, "acme-corp", record.consent_id, "employee-self")
        unknown = await ledger.revoke(tx, "acme-corp", "nope", "employee-self")
    assert unknown is None
    assert revoked is not None
    assert revoked.revoke_time_us == T0 + 5 * SECOND
    assert revoked.revoke_operator == "employee-self"
    assert revoked.state_at(ledger.clock.now) is ConsentState.REVOKED
    assert not await ledger.is_active("acme-corp", "p2", "PURPOSE_SETTLEMENT")
    page, _ = await ledger.page("acme-corp", "p2", purpose=None, states=[], after=None, limit=5)
    assert page == [revoked]


async def test_an_idempotency_key_is_claimed_once_per_payload(ledger: ConsentLedger) -> None:
    key = RequestKey("acme-corp", "GrantConsent", "r1", "digest-1")
    async with ledger.store.transaction() as tx:
        assert await ledger.claim(tx, key) is None
        await ledger.remember(tx, key, b"first answer")
    async with ledger.store.transaction() as tx:
        assert await ledger.claim(tx, key) == b"first answer"
    with pytest.raises(IdempotencyKeyReused):
        async with ledger.store.transaction() as tx:
            await ledger.claim(tx, RequestKey("acme-corp", "GrantConsent", "r1", "digest-2"))
    async with ledger.store.transaction() as tx:  # another method or tenant: another key
        assert await ledger.claim(tx, RequestKey("acme-corp", "RevokeConsent", "r1", "d")) is None
        assert await ledger.claim(tx, RequestKey("globex", "GrantConsent", "r1", "d")) is None


async def test_a_failed_call_leaves_its_key_unused(ledger: ConsentLedger) -> None:
    key = RequestKey("acme-corp", "RevokeConsent", "r9", "digest")

    async def claim_then_fail() -> None:
        async with ledger.store.transaction() as tx:
            assert await ledger.claim(tx, key) is None
            raise LookupError("CONSENT_NOT_FOUND")

    with pytest.raises(LookupError):
        await claim_then_fail()
    async with ledger.store.transaction() as tx:
        assert await ledger.claim(tx, key) is None


def _manual_hmac_sm3(key: bytes, message: bytes) -> str:
    """RFC 2104 by hand over SM3 (64-byte blocks), independent of the HMAC class under test."""
    from cryptography.hazmat.primitives import hashes

    def sm3(data: bytes) -> bytes:
        digest = hashes.Hash(hashes.SM3())
        digest.update(data)
        return digest.finalize()

    block = key.ljust(64, b"\0")
    inner = sm3(bytes(b ^ 0x36 for b in block) + message)
    return sm3(bytes(b ^ 0x5C for b in block) + inner).hex()


async def test_the_host_pseudonym_is_hmac_sm3_of_type_and_number() -> None:
    """Without [hsm]: HMAC-SM3 of the audit trail's subject message ``<type>:<NUMBER>``, so a
    person's pseudonym is the same in the consent ledger, settlements and the trail."""
    key = bytes(range(32))
    pseudonyms = HostPseudonymizer(key)
    assert await pseudonyms.of("01", "110105194912310021") == _manual_hmac_sm3(
        key, b"1:110105194912310021"
    )
    assert await pseudonyms.of("01", " 11010519491231002x") == _manual_hmac_sm3(
        key, b"1:11010519491231002X"
    )
    assert await pseudonyms.of("01", "1") != await HostPseudonymizer(bytes(32)).of("01", "1")
    assert "0001" not in repr(pseudonyms)
    with pytest.raises(ValueError, match="at least 16 bytes"):
        HostPseudonymizer(b"short")
    with pytest.raises(ValueError, match="certificate type"):
        await pseudonyms.of("zz", "1")


async def test_digests_are_keyed_and_separated_by_domain() -> None:
    """``digest`` is the PRF of ``yibao-digest 0x1f domain 0x1f data``: no digest of a payload
    equals its unkeyed hash, another domain's digest, or a subject's pseudonym."""
    key = bytes(range(32))
    digests = HostPseudonymizer(key)
    data = b"110105194912310021"
    one = await digests.digest("settlement-payload", data)
    assert one == _manual_hmac_sm3(key, b"yibao-digest\x1fsettlement-payload\x1f" + data)
    assert one != await digests.digest("offsite-payload", data)
    assert one != await HostPseudonymizer(bytes(32)).digest("settlement-payload", data)
    assert one != await digests.of("01", data.decode())
    for bad in ("", "a\x1fb"):
        with pytest.raises(ValueError, match="domain"):
            await digests.digest(bad, data)

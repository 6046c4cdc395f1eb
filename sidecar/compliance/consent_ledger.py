"""The consent ledger: which data subject agreed to which processing purpose, when, and how.

A consent row records the subject as a keyed pseudonym (never the certificate number or the
name), the purpose, the scope text and the version and SM3 hash of the notice the subject saw,
the channel evidence (e.g. the IM message id of the consent dialog), the operator, the grant time
and an optional expiry. Revocation sets the revocation time and operator; nothing is deleted.

The state of a consent is derived from its times when it is read (``state_at``), so an expiry
needs no job. :meth:`ConsentLedger.is_active` reads the store on every call: a revocation is seen
by the very next call on every replica, and there is no cache to invalidate.

No gRPC types here: purposes are the contract's enum value names (``PURPOSE_SETTLEMENT``).
Times are microseconds since the epoch, UTC.
"""

from __future__ import annotations

import enum
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sidecar.store import Migration, Store, Tx

COMPONENT = "consent"

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        component=COMPONENT,
        version=1,
        statements=(
            """CREATE TABLE consent_grants (
                consent_id TEXT PRIMARY KEY,
                tenant TEXT NOT NULL,
                subject TEXT NOT NULL,
                certificate_type TEXT NOT NULL,
                purpose TEXT NOT NULL,
                scope TEXT NOT NULL,
                notice_version TEXT NOT NULL,
                notice_sm3_hex TEXT NOT NULL,
                channel_evidence TEXT NOT NULL,
                grant_operator TEXT NOT NULL,
                grant_time_us BIGINT NOT NULL,
                expire_time_us BIGINT,
                revoke_time_us BIGINT,
                revoke_operator TEXT
            )""",
            "CREATE INDEX consent_grants_by_subject"
            " ON consent_grants (tenant, subject, purpose, grant_time_us)",
            # Idempotency keys of GrantConsent/RevokeConsent: the key, a keyed digest of the
            # payload, and the first answer (with the data subject stripped out).
            """CREATE TABLE consent_requests (
                tenant TEXT NOT NULL,
                method TEXT NOT NULL,
                request_id TEXT NOT NULL,
                payload_digest TEXT NOT NULL,
                answer {blob},
                created_us BIGINT NOT NULL,
                PRIMARY KEY (tenant, method, request_id)
            )""",
        ),
    ),
)

Clock = Callable[[], int]


def now_us() -> int:
    """The wall clock in microseconds since the epoch (UTC)."""
    return time.time_ns() // 1000


class ConsentState(enum.Enum):
    ACTIVE = "ACTIVE"
    REVOKED = "REVOKED"
    EXPIRED = "EXPIRED"


@dataclass(frozen=True)
class NewConsent:
    """A validated grant: everything but the id and the grant time."""

    tenant: str
    subject: str  # the keyed pseudonym
    certificate_type: str  # the platform's psn_cert_type code; not personal data
    purpose: str
    scope: str
    notice_version: str
    notice_sm3_hex: str
    channel_evidence: str
    operator: str
    expire_time_us: int | None


@dataclass(frozen=True)
class ConsentRecord:
    consent_id: str
    tenant: str
    subject: str
    certificate_type: str
    purpose: str
    scope: str
    notice_version: str
    notice_sm3_hex: str
    channel_evidence: str
    grant_operator: str
    grant_time_us: int
    expire_time_us: int | None
    revoke_time_us: int | None
    revoke_operator: str | None

    def state_at(self, now: int) -> ConsentState:
        if self.revoke_time_us is not None:
            return ConsentState.REVOKED
        if self.expire_time_us is not None and self.expire_time_us <= now:
            return ConsentState.EXPIRED
        return ConsentState.ACTIVE


@dataclass(frozen=True)
class Cursor:
    """Where a page ended: the last consent shown (pages run newest first)."""

    grant_time_us: int
    consent_id: str


# Every statement is a constant; every value is a bound parameter.
_IS_ACTIVE = (
    "SELECT consent_id FROM consent_grants"
    " WHERE tenant = :tenant AND subject = :subject AND purpose = :purpose"
    " AND revoke_time_us IS NULL AND (expire_time_us IS NULL OR expire_time_us > :now) LIMIT 1"
)
_INSERT = (
    "INSERT INTO consent_grants (consent_id, tenant, subject, certificate_type, purpose, scope,"
    " notice_version, notice_sm3_hex, channel_evidence, grant_operator, grant_time_us,"
    " expire_time_us, revoke_time_us, revoke_operator)"
    " VALUES (:consent_id, :tenant, :subject, :certificate_type, :purpose, :scope,"
    " :notice_version, :notice_sm3_hex, :channel_evidence, :grant_operator, :grant_time_us,"
    " :expire_time_us, :revoke_time_us, :revoke_operator)"
)
_REVOKE_ONE = (
    "UPDATE consent_grants SET revoke_time_us = :now, revoke_operator = :operator"
    " WHERE tenant = :tenant AND consent_id = :consent_id"
    " AND revoke_time_us IS NULL AND (expire_time_us IS NULL OR expire_time_us > :now)"
)
_SELECT_ONE = (
    "SELECT consent_id, tenant, subject, certificate_type, purpose, scope, notice_version,"
    " notice_sm3_hex, channel_evidence, grant_operator, grant_time_us, expire_time_us,"
    " revoke_time_us, revoke_operator"
    " FROM consent_grants WHERE tenant = :tenant AND consent_id = :consent_id"
)
_REVOKE_ALL = (
    "UPDATE consent_grants SET revoke_time_us = :now, revoke_operator = :operator"
    " WHERE tenant = :tenant AND subject = :subject AND purpose = :purpose"
    " AND revoke_time_us IS NULL AND (expire_time_us IS NULL OR expire_time_us > :now)"
    " RETURNING consent_id, tenant, subject, certificate_type, purpose, scope, notice_version,"
    " notice_sm3_hex, channel_evidence, grant_operator, grant_time_us, expire_time_us,"
    " revoke_time_us, revoke_operator"
)
# One page, newest first. Filters are switched by parameters (1 = wanted) so the text is fixed.
_PAGE = (
    "SELECT consent_id, tenant, subject, certificate_type, purpose, scope, notice_version,"
    " notice_sm3_hex, channel_evidence, grant_operator, grant_time_us, expire_time_us,"
    " revoke_time_us, revoke_operator"
    " FROM consent_grants WHERE tenant = :tenant AND subject = :subject"
    " AND (:any_purpose = 1 OR purpose = :purpose)"
    " AND (:any_state = 1"
    " OR (:active = 1 AND revoke_time_us IS NULL"
    " AND (expire_time_us IS NULL OR expire_time_us > :now))"
    " OR (:revoked = 1 AND revoke_time_us IS NOT NULL)"
    " OR (:expired = 1 AND revoke_time_us IS NULL AND expire_time_us <= :now))"
    " AND (grant_time_us < :after_time"
    " OR (grant_time_us = :after_time AND consent_id < :after_id))"
    " ORDER BY grant_time_us DESC, consent_id DESC LIMIT :limit"
)
_AFTER_EVERYTHING = 2**62  # a grant time later than any: the first page


class IdempotencyKeyReused(Exception):
    """The request id was used before for another payload."""


@dataclass(frozen=True)
class RequestKey:
    """An idempotency key in its scope (tenant and method) and the digest of its payload."""

    tenant: str
    method: str
    request_id: str
    payload_digest: str


class ConsentLedger:
    """Reads and writes consents in the shared store."""

    def __init__(
        self, store: Store, clock: Clock = now_us, new_id: Callable[[], str] | None = None
    ) -> None:
        self.store = store
        self.clock = clock
        self._new_id = new_id or (lambda: uuid.uuid4().hex)

    async def is_active(self, tenant: str, subject: str, purpose: str) -> bool:
        """Whether the subject has a live consent for the purpose, read from the store now."""
        async with self.store.transaction() as tx:
            row = await tx.fetch_one(
                _IS_ACTIVE,
                {"tenant": tenant, "subject": subject, "purpose": purpose, "now": self.clock()},
            )
        return row is not None

    async def claim(self, tx: Tx, key: RequestKey) -> bytes | None:
        """Claim an idempotency key in ``tx``: ``None`` if it is new, else the first answer.

        The claim is an insert, so a concurrent repeat waits for the first transaction and then
        reads its answer. Raises ``IdempotencyKeyReused`` for the same key with another payload.
        """
        claimed = await tx.execute(
            "INSERT INTO consent_requests"
            " (tenant, method, request_id, payload_digest, answer, created_us)"
            " VALUES (:tenant, :method, :request_id, :digest, NULL, :now)"
            " ON CONFLICT (tenant, method, request_id) DO NOTHING",
            {**_key_params(key), "digest": key.payload_digest, "now": self.clock()},
        )
        if claimed:
            return None
        row = await tx.fetch_one(
            "SELECT payload_digest, answer FROM consent_requests"
            " WHERE tenant = :tenant AND method = :method AND request_id = :request_id",
            _key_params(key),
        )
        if row is None or row["payload_digest"] != key.payload_digest:
            raise IdempotencyKeyReused
        answer = row["answer"]
        return bytes(answer) if answer is not None else b""

    async def remember(self, tx: Tx, key: RequestKey, answer: bytes) -> None:
        """Store the first answer for a key claimed in the same transaction."""
        await tx.execute(
            "UPDATE consent_requests SET answer = :answer"
            " WHERE tenant = :tenant AND method = :method AND request_id = :request_id",
            {**_key_params(key), "answer": answer},
        )

    async def grant(self, tx: Tx, new: NewConsent) -> ConsentRecord:
        record = ConsentRecord(
            consent_id=self._new_id(),
            tenant=new.tenant,
            subject=new.subject,
            certificate_type=new.certificate_type,
            purpose=new.purpose,
            scope=new.scope,
            notice_version=new.notice_version,
            notice_sm3_hex=new.notice_sm3_hex,
            channel_evidence=new.channel_evidence,
            grant_operator=new.operator,
            grant_time_us=self.clock(),
            expire_time_us=new.expire_time_us,
            revoke_time_us=None,
            revoke_operator=None,
        )
        await tx.execute(_INSERT, vars(record))
        return record

    async def revoke(
        self, tx: Tx, tenant: str, consent_id: str, operator: str
    ) -> ConsentRecord | None:
        """Revoke one consent if it is active; the consent as it now is, or ``None`` if unknown."""
        params = {"tenant": tenant, "consent_id": consent_id, "now": self.clock()}
        await tx.execute(_REVOKE_ONE, {**params, "operator": operator})
        row = await tx.fetch_one(_SELECT_ONE, params)
        return _record(row) if row is not None else None

    async def revoke_all(
        self, tx: Tx, tenant: str, subject: str, purpose: str, operator: str
    ) -> list[ConsentRecord]:
        """Revoke every active consent of the subject for the purpose; those it revoked."""
        rows = await tx.fetch_all(
            _REVOKE_ALL,
            {
                "tenant": tenant,
                "subject": subject,
                "purpose": purpose,
                "operator": operator,
                "now": self.clock(),
            },
        )
        records = [_record(row) for row in rows]
        return sorted(records, key=lambda r: (r.grant_time_us, r.consent_id), reverse=True)

    async def page(
        self,
        tenant: str,
        subject: str,
        *,
        purpose: str | None,
        states: Sequence[ConsentState],
        after: Cursor | None,
        limit: int,
    ) -> tuple[list[ConsentRecord], int]:
        """Up to ``limit`` consents, newest first, after ``after``; and when they were read."""
        now = self.clock()
        wanted = set(states)
        params: dict[str, object] = {
            "tenant": tenant,
            "subject": subject,
            "now": now,
            "any_purpose": int(purpose is None),
            "purpose": purpose or "",
            "any_state": int(not wanted),
            "active": int(ConsentState.ACTIVE in wanted),
            "revoked": int(ConsentState.REVOKED in wanted),
            "expired": int(ConsentState.EXPIRED in wanted),
            "after_time": after.grant_time_us if after else _AFTER_EVERYTHING,
            "after_id": after.consent_id if after else "",
            "limit": limit,
        }
        async with self.store.transaction() as tx:
            rows = await tx.fetch_all(_PAGE, params)
        return [_record(row) for row in rows], now


def _key_params(key: RequestKey) -> dict[str, object]:
    return {"tenant": key.tenant, "method": key.method, "request_id": key.request_id}


def _record(row: Mapping[str, Any]) -> ConsentRecord:
    return ConsentRecord(
        consent_id=str(row["consent_id"]),
        tenant=str(row["tenant"]),
        subject=str(row["subject"]),
        certificate_type=str(row["certificate_type"]),
        purpose=str(row["purpose"]),
        scope=str(row["scope"]),
        notice_version=str(row["notice_version"]),
        notice_sm3_hex=str(row["notice_sm3_hex"]),
        channel_evidence=str(row["channel_evidence"]),
        grant_operator=str(row["grant_operator"]),
        grant_time_us=int(row["grant_time_us"]),
        expire_time_us=_optional_int(row["expire_time_us"]),
        revoke_time_us=_optional_int(row["revoke_time_us"]),
        revoke_operator=None if row["revoke_operator"] is None else str(row["revoke_operator"]),
    )


def _optional_int(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]

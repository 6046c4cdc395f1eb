"""``ConsentService``: the consent ledger's gRPC face.

Grants, revocations and listings of the caller's tenant. The data subject is stored only as a
keyed pseudonym, so answers carry the subject as the request named it; a revocation by
``consent_id`` names no subject and its answer carries only the certificate type.

Grant and revoke are idempotent by ``request_id`` (scope: tenant and method): the key is claimed in
the same transaction that records the consent, with a keyed digest of the payload and the first
answer (subject stripped), so a repeat returns the first outcome and a concurrent repeat waits for
it. Errors roll the transaction back and leave the key unused. A revocation drops the subject's
cached answers (``SubjectCache``) once it is committed; a revocation by id, which names no
number, empties the cache.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable
from typing import Any

import grpc

from sidecar import errors
from sidecar._proto.yibao.gateway.v1 import common_pb2 as common
from sidecar._proto.yibao.gateway.v1 import consent_pb2 as consent
from sidecar._proto.yibao.gateway.v1 import consent_pb2_grpc as consent_grpc
from sidecar.compliance.consent_gate import SubjectCache, consent_unavailable
from sidecar.compliance.consent_ledger import (
    ConsentLedger,
    ConsentRecord,
    ConsentState,
    Cursor,
    IdempotencyKeyReused,
    NewConsent,
    RequestKey,
)
from sidecar.compliance.pseudonyms import CONSENT_PAYLOAD, Pseudonymizer
from sidecar.domain.subjects import Subject
from sidecar.errors import FieldViolation
from sidecar.gateway import consent_validation as checks
from sidecar.interceptors.context import CallContext, Caller
from sidecar.serving.server import Registration
from sidecar.store import StoreError

SERVICE_NAME = consent.DESCRIPTOR.services_by_name["ConsentService"].full_name
_STATES = {
    ConsentState.ACTIVE: consent.CONSENT_STATE_ACTIVE,
    ConsentState.REVOKED: consent.CONSENT_STATE_REVOKED,
    ConsentState.EXPIRED: consent.CONSENT_STATE_EXPIRED,
}


# Called by the filter chain with the CallContext where the generated signatures say gRPC's
# context (see sidecar/gateway/service.py).
_Servicer: Any = consent_grpc.ConsentServiceServicer


class ConsentService(_Servicer):  # type: ignore[misc]
    def __init__(
        self,
        ledger: ConsentLedger,
        pseudonymizer: Pseudonymizer,
        cache: SubjectCache | None = None,
    ) -> None:
        self._ledger = ledger
        self._pseudonymizer = pseudonymizer
        self._cache = cache

    def registration(self) -> Registration:
        return Registration(
            SERVICE_NAME,
            lambda server: consent_grpc.add_ConsentServiceServicer_to_server(self, server),
        )

    async def GrantConsent(  # noqa: N802 - gRPC method name
        self, request: consent.GrantConsentRequest, call: CallContext
    ) -> consent.GrantConsentResponse:
        grant = checks.grant_input(request, self._ledger.clock())
        caller = call.identified
        pseudonym = await self._pseudonym(grant.subject)
        key = await self._key(caller, "GrantConsent", request.request_id, request)
        try:
            async with self._ledger.store.transaction() as tx:
                first = await self._ledger.claim(tx, key)
                if first is None:
                    record = await self._ledger.grant(
                        tx,
                        NewConsent(
                            tenant=caller.tenant,
                            subject=pseudonym,
                            certificate_type=grant.certificate_type,
                            purpose=grant.purpose,
                            scope=grant.scope,
                            notice_version=grant.notice_version,
                            notice_sm3_hex=grant.notice_sm3_hex,
                            channel_evidence=grant.channel_evidence,
                            operator=caller.operator,
                            expire_time_us=grant.expire_time_us,
                        ),
                    )
                    answer = consent.GrantConsentResponse(
                        consent=_consent(record, record.grant_time_us)
                    )
                    first = answer.SerializeToString()
                    await self._ledger.remember(tx, key, first)
        except IdempotencyKeyReused:
            raise _key_reused() from None
        except StoreError:
            raise consent_unavailable() from None
        answer = consent.GrantConsentResponse.FromString(first)
        answer.consent.subject.CopyFrom(request.subject)
        return answer

    async def RevokeConsent(  # noqa: N802
        self, request: consent.RevokeConsentRequest, call: CallContext
    ) -> consent.RevokeConsentResponse:
        revoke = checks.revoke_input(request)
        caller = call.identified
        pseudonym = await self._pseudonym(revoke.subject) if revoke.subject is not None else None
        key = await self._key(caller, "RevokeConsent", request.request_id, request)
        revoked_any = False
        try:
            async with self._ledger.store.transaction() as tx:
                first = await self._ledger.claim(tx, key)
                if first is None:
                    if revoke.consent_id is not None:
                        one = await self._ledger.revoke(
                            tx, caller.tenant, revoke.consent_id, caller.operator
                        )
                        if one is None:
                            raise _consent_not_found()
                        records = [one]
                    else:
                        assert pseudonym is not None
                        records = await self._ledger.revoke_all(
                            tx, caller.tenant, pseudonym, revoke.purpose, caller.operator
                        )
                    now = self._ledger.clock()
                    answer = consent.RevokeConsentResponse(
                        consents=[_consent(record, now) for record in records]
                    )
                    first = answer.SerializeToString()
                    await self._ledger.remember(tx, key, first)
                    revoked_any = bool(records)
        except IdempotencyKeyReused:
            raise _key_reused() from None
        except StoreError:
            raise consent_unavailable() from None
        if self._cache is not None and revoked_any:
            if revoke.subject is not None:
                self._cache.invalidate(revoke.subject)
            else:  # by id: the ledger keeps no number to name the subject by
                self._cache.clear()
        answer = consent.RevokeConsentResponse.FromString(first)
        if request.WhichOneof("target") == "subject_purpose":
            for item in answer.consents:
                item.subject.CopyFrom(request.subject_purpose.subject)
        return answer

    async def ListConsents(  # noqa: N802
        self, request: consent.ListConsentsRequest, call: CallContext
    ) -> consent.ListConsentsResponse:
        listing = checks.list_input(request)
        caller = call.identified
        pseudonym = await self._pseudonym(listing.subject)
        binding = _binding(caller.tenant, pseudonym, listing.purpose, listing.states)
        after = _cursor(listing.page_token, binding) if listing.page_token else None
        try:
            records, now = await self._ledger.page(
                caller.tenant,
                pseudonym,
                purpose=listing.purpose,
                states=listing.states,
                after=after,
                limit=listing.page_size + 1,
            )
        except StoreError:
            raise consent_unavailable() from None
        shown = records[: listing.page_size]
        answer = consent.ListConsentsResponse(consents=[_consent(r, now) for r in shown])
        for item in answer.consents:
            item.subject.CopyFrom(request.subject)
        if len(records) > listing.page_size:
            last = shown[-1]
            answer.next_page_token = _token(Cursor(last.grant_time_us, last.consent_id), binding)
        return answer

    async def _pseudonym(self, subject: Subject) -> str:
        return await self._pseudonymizer.of(
            subject.certificate_type_code, subject.certificate_number
        )

    async def _key(self, caller: Caller, method: str, request_id: str, request: Any) -> RequestKey:
        """The idempotency key with a *keyed* digest of the payload (it contains personal data)."""
        payload = type(request)()
        payload.CopyFrom(request)
        payload.ClearField("request_id")
        digest = await self._pseudonymizer.digest(
            f"{CONSENT_PAYLOAD}:{method}", payload.SerializeToString(deterministic=True)
        )
        return RequestKey(caller.tenant, method, request_id, digest)


def _consent(record: ConsentRecord, now_us: int) -> consent.Consent:
    """The record as the contract shows it; the subject carries the certificate type only."""
    message = consent.Consent(
        consent_id=record.consent_id,
        subject=common.DataSubject(
            certificate_type=common.CertificateType.Value(record.certificate_type)
        ),
        purpose=common.Purpose.Value(record.purpose),
        scope=record.scope,
        notice_version=record.notice_version,
        notice_sm3_hex=record.notice_sm3_hex,
        channel_evidence=record.channel_evidence,
        state=_STATES[record.state_at(now_us)],
        grant_operator=record.grant_operator,
        revoke_operator=record.revoke_operator or "",
    )
    message.grant_time.FromMicroseconds(record.grant_time_us)
    if record.expire_time_us is not None:
        message.expire_time.FromMicroseconds(record.expire_time_us)
    if record.revoke_time_us is not None:
        message.revoke_time.FromMicroseconds(record.revoke_time_us)
    return message


def _binding(tenant: str, subject: str, purpose: str | None, states: Iterable[ConsentState]) -> str:
    """What a page token is valid for: the tenant and every filter of the listing."""
    material = "\x1f".join([tenant, subject, purpose or "", *sorted(s.value for s in states)])
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def _token(cursor: Cursor, binding: str) -> str:
    body = json.dumps({"t": cursor.grant_time_us, "i": cursor.consent_id, "b": binding})
    return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")


def _cursor(token: str, binding: str) -> Cursor:
    try:
        body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if not isinstance(body, dict) or body.get("b") != binding:
            raise ValueError("another listing's token")
        grant_time, consent_id = body["t"], body["i"]
        if not isinstance(grant_time, int) or not isinstance(consent_id, str):
            raise ValueError("malformed token")
    except (ValueError, KeyError, binascii.Error, UnicodeDecodeError):
        problem = "is not a token of this listing (same tenant and filters)"
        raise errors.invalid_request([FieldViolation("page_token", problem)]) from None
    return Cursor(grant_time, consent_id)


def _key_reused() -> errors.GatewayError:
    return errors.GatewayError(
        grpc.StatusCode.ALREADY_EXISTS,
        "IDEMPOTENCY_KEY_REUSED",
        "request_id was used before with a different payload; use a new request_id",
    )


def _consent_not_found() -> errors.GatewayError:
    return errors.GatewayError(
        grpc.StatusCode.NOT_FOUND,
        "CONSENT_NOT_FOUND",
        "no consent with this consent_id for this tenant",
    )

"""Granting consent the way an IM service does, for tests that call InsuranceGateway RPCs."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence

import grpc
from cryptography.hazmat.primitives import hashes

from sidecar._proto.yibao.gateway.v1 import common_pb2 as common
from sidecar._proto.yibao.gateway.v1 import consent_pb2 as consent
from sidecar._proto.yibao.gateway.v1 import consent_pb2_grpc as consent_grpc
from yibao_devkit.simulator.population import Person

NOTICE_VERSION = "2026-01"
NOTICE_TEXT = "我们将向国家医疗保障信息平台查询您的参保信息，仅用于本次办理。"
TENANT_METADATA = (("x-yibao-tenant", "acme-corp"), ("x-yibao-operator", "im-bot-01"))
# Every purpose of the contract (tests about something else consent to all of them).
ALL_PURPOSES = tuple(p for p in common.Purpose.values() if p != common.PURPOSE_UNSPECIFIED)


def sm3_hex(text: str) -> str:
    digest = hashes.Hash(hashes.SM3())
    digest.update(text.encode())
    return digest.finalize().hex()


def subject_of(person: Person) -> common.DataSubject:
    return common.DataSubject(
        certificate_type=common.CERTIFICATE_TYPE_RESIDENT_ID_CARD,
        certificate_number=person.certno,
        name=person.psn_name,
    )


def grant_request(
    subject: common.DataSubject, purpose: common.Purpose.ValueType, **changes: object
) -> consent.GrantConsentRequest:
    fields: dict[str, object] = {
        "request_id": uuid.uuid4().hex,
        "subject": subject,
        "purpose": purpose,
        "scope": "参保信息查询，仅用于本次办理",
        "notice_version": NOTICE_VERSION,
        "notice_sm3_hex": sm3_hex(NOTICE_TEXT),
        "channel_evidence": f"im-msg-{uuid.uuid4().hex[:12]}",
    }
    fields.update(changes)
    return consent.GrantConsentRequest(**fields)  # type: ignore[arg-type]


async def grant_consent(
    channel: grpc.aio.Channel,
    subject: common.DataSubject,
    purpose: common.Purpose.ValueType = common.PURPOSE_ENROLLMENT_QUERY,
    metadata: Sequence[tuple[str, str]] = TENANT_METADATA,
    **changes: object,
) -> consent.Consent:
    stub = consent_grpc.ConsentServiceStub(channel)
    answer = await stub.GrantConsent(grant_request(subject, purpose, **changes), metadata=metadata)
    return answer.consent


async def consent_to(
    channel: grpc.aio.Channel,
    subjects: Iterable[common.DataSubject],
    purposes: Iterable[common.Purpose.ValueType] = ALL_PURPOSES,
    metadata: Sequence[tuple[str, str]] = TENANT_METADATA,
) -> None:
    """Every subject consents to every purpose (for tests about something else)."""
    wanted = tuple(purposes)
    for subject in subjects:
        for purpose in wanted:
            await grant_consent(channel, subject, purpose, metadata)

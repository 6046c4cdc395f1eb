"""The demo's consent act: the IM service shows a notice, the employee agrees, the sidecar records.

Kept apart from demo.py so the script there reads as the story: consent first, then queries.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Protocol

import grpc
from cryptography.hazmat.primitives import hashes

from sidecar._proto.yibao.gateway.v1 import common_pb2 as common
from sidecar._proto.yibao.gateway.v1 import consent_pb2 as consent
from sidecar._proto.yibao.gateway.v1 import consent_pb2_grpc as consent_grpc
from sidecar.observability.masking import mask_id

NOTICE_VERSION = "demo-2026-01"
NOTICE_TEXT = (
    "个人信息处理告知书：为办理医保业务，我们将把您的证件号码和姓名发送至国家医疗保障信息平台，"
    "查询您的参保信息和待遇资格。您可随时撤回同意。"
)
SCOPE = "参保信息查询、待遇资格检查，仅用于本次办理"


class Say(Protocol):
    def step(self, text: str) -> None: ...


def notice_sm3_hex() -> str:
    digest = hashes.Hash(hashes.SM3())
    digest.update(NOTICE_TEXT.encode())
    return digest.finalize().hex()


async def grant(
    channel: grpc.aio.Channel,
    metadata: Sequence[tuple[str, str]],
    label: str,
    subject: common.DataSubject,
    purposes: Sequence[common.Purpose.ValueType],
    say: Say,
) -> list[consent.Consent]:
    """The subject confirms the consent dialog once; one consent per purpose is recorded."""
    stub = consent_grpc.ConsentServiceStub(channel)
    evidence = f"im-msg-{uuid.uuid4().hex[:16]}"  # the IM message id of the confirmed dialog
    granted = []
    for purpose in purposes:
        request = consent.GrantConsentRequest(
            request_id=uuid.uuid4().hex,
            subject=subject,
            purpose=purpose,
            scope=SCOPE,
            notice_version=NOTICE_VERSION,
            notice_sm3_hex=notice_sm3_hex(),
            channel_evidence=evidence,
        )
        granted.append((await stub.GrantConsent(request, metadata=metadata)).consent)
    names = ", ".join(common.Purpose.Name(p) for p in purposes)
    say.step(
        f"{label} {mask_id(subject.certificate_number)}: consent to {names} under notice "
        f"{NOTICE_VERSION} (SM3 {notice_sm3_hex()[:16]}...), evidence {evidence}"
    )
    return granted


async def revoke(
    channel: grpc.aio.Channel,
    metadata: Sequence[tuple[str, str]],
    subject: common.DataSubject,
    purpose: common.Purpose.ValueType,
    say: Say,
) -> None:
    stub = consent_grpc.ConsentServiceStub(channel)
    request = consent.RevokeConsentRequest(
        request_id=uuid.uuid4().hex,
        subject_purpose=consent.SubjectPurpose(subject=subject, purpose=purpose),
    )
    answer = await stub.RevokeConsent(request, metadata=metadata)
    say.step(
        f"{mask_id(subject.certificate_number)} revoked {common.Purpose.Name(purpose)} "
        f"({len(answer.consents)} consent(s)); the next call must be refused"
    )

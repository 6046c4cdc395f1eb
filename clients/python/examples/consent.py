"""Consent: record the data subject's consent for a purpose, list it, revoke it.

    python examples/consent.py --certno 11010519491231002X --name 张三 --revoke

Every InsuranceGateway RPC needs an active consent for its purpose (docs/api.md section 3).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence

from _args import client_of, parse, parser, subject_of

from yibao_client import Client
from yibao_client.v1 import common, consent

NOTICE_VERSION = "2026-01"
NOTICE_TEXT = "我们将向国家医疗保障信息平台查询您的参保信息，仅用于本次办理。"


def grant(
    client: Client, subject: common.DataSubject, purpose: common.Purpose.ValueType
) -> consent.Consent:
    """Records the consent the subject just gave in the IM dialog (one new request_id per act)."""
    answer = client.grant_consent(
        consent.GrantConsentRequest(
            request_id=uuid.uuid4().hex,
            subject=subject,
            purpose=purpose,
            scope="参保信息查询，仅用于本次办理",
            notice_version=NOTICE_VERSION,
            notice_sm3_hex=hashlib.new("sm3", NOTICE_TEXT.encode()).hexdigest(),
            channel_evidence=f"im-msg-{uuid.uuid4().hex[:12]}",
        )
    )
    return answer.consent


def active(client: Client, subject: common.DataSubject) -> list[consent.Consent]:
    answer = client.list_consents(
        consent.ListConsentsRequest(subject=subject, states=[consent.CONSENT_STATE_ACTIVE])
    )
    return list(answer.consents)


def revoke(client: Client, consent_id: str) -> consent.Consent:
    answer = client.revoke_consent(
        consent.RevokeConsentRequest(request_id=uuid.uuid4().hex, consent_id=consent_id)
    )
    return answer.consents[0]


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parser(__doc__.splitlines()[0])
    arguments.add_argument("--purpose", default="PURPOSE_ENROLLMENT_QUERY")
    arguments.add_argument("--revoke", action="store_true", help="revoke it again at the end")
    args = parse(arguments, argv)
    with client_of(args) as client:
        granted = grant(client, subject_of(args), common.Purpose.Value(args.purpose))
        print("granted", granted.consent_id, consent.ConsentState.Name(granted.state))
        for item in active(client, subject_of(args)):
            print("active", item.consent_id, common.Purpose.Name(item.purpose))
        if args.revoke:
            print("revoked", consent.ConsentState.Name(revoke(client, granted.consent_id).state))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

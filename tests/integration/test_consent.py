"""The consent ledger and its gate, end to end, on SQLite and on PostgreSQL.

Every InsuranceGateway RPC is refused without a live consent for its purpose before anything
reaches the platform (built or not); ConsentService grants, revokes and lists; a revocation holds
for the next call, also on another replica; a store that is down fails closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf import message_factory, timestamp_pb2

from sidecar._proto.yibao.gateway.v1 import common_pb2 as common
from sidecar._proto.yibao.gateway.v1 import consent_pb2 as consent
from sidecar._proto.yibao.gateway.v1 import consent_pb2_grpc as consent_grpc
from sidecar._proto.yibao.gateway.v1 import gateway_pb2
from sidecar.config import Settings, StoreConfig
from tests.integration.conftest import RunningSidecar, running_sidecar, settings_for
from tests.integration.consent_support import (
    NOTICE_TEXT,
    TENANT_METADATA,
    grant_consent,
    grant_request,
    sm3_hex,
    subject_of,
)
from tests.integration.store_outage import StoreUnderTest, store_under_test
from tests.integration.test_gateway import call_enrollment, details
from yibao_devkit.simulator.population import Population
from yibao_devkit.simulator.server import RunningSimulator

GATEWAY = gateway_pb2.DESCRIPTOR.services_by_name["InsuranceGateway"]
OTHER_TENANT = (("x-yibao-tenant", "globex"), ("x-yibao-operator", "hr-clerk-7"))
EXPECTED_PURPOSES = {
    "GetEnrollment": "PURPOSE_ENROLLMENT_QUERY",
    "GetAccount": "PURPOSE_ACCOUNT_QUERY",
    "SubmitOffsiteRegistration": "PURPOSE_OFFSITE_REGISTRATION",
    "ListOffsiteRegistrations": "PURPOSE_OFFSITE_REGISTRATION",
    "CancelOffsiteRegistration": "PURPOSE_OFFSITE_REGISTRATION",
    "SettleWithEVoucher": "PURPOSE_SETTLEMENT",
    "GetSettlement": "PURPOSE_SETTLEMENT",
    "CancelSettlement": "PURPOSE_SETTLEMENT",
    "CheckEligibility": "PURPOSE_ELIGIBILITY_CHECK",
}


@pytest.fixture
async def backend(store_config: StoreConfig) -> AsyncIterator[StoreUnderTest]:
    async with store_under_test(store_config) as under_test:
        yield under_test


def gated_settings(simulator: RunningSimulator, directory: Path, store: StoreConfig) -> Settings:
    return settings_for(simulator, directory).model_copy(update={"store": store})


@pytest.fixture
async def gated(
    simulator: RunningSimulator, short_dir: Path, backend: StoreUnderTest
) -> AsyncIterator[RunningSidecar]:
    """A sidecar on the back end under test; nobody has consented to anything yet."""
    async with running_sidecar(gated_settings(simulator, short_dir, backend.config)) as running:
        yield running


def consents(channel: grpc.aio.Channel) -> consent_grpc.ConsentServiceStub:
    return consent_grpc.ConsentServiceStub(channel)


def later(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds))
    return stamp


async def raw_call(running: RunningSidecar, method: Any, request: Any) -> Any:
    call = running.channel.unary_unary(
        f"/{GATEWAY.full_name}/{method.name}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=lambda b: b,
    )
    return await call(request, metadata=TENANT_METADATA, timeout=10)


def request_with_subject(method: Any, subject: common.DataSubject) -> Any:
    request = message_factory.GetMessageClass(method.input_type)()
    request.subject.CopyFrom(subject)
    return request


# The gate ------------------------------------------------------------------------------------


def test_the_gate_reads_each_purpose_from_the_contract() -> None:
    from sidecar.compliance.consent_gate import required_purposes

    found = required_purposes(GATEWAY)
    assert {path.rsplit("/", 1)[1]: p for path, p in found.items()} == EXPECTED_PURPOSES


@pytest.mark.parametrize("method", list(GATEWAY.methods), ids=lambda m: m.name)
async def test_every_gateway_rpc_needs_consent_before_anything_else(
    gated: RunningSidecar, population: Population, simulator: RunningSimulator, method: Any
) -> None:
    subject = subject_of(population.examples().employee)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await raw_call(gated, method, request_with_subject(method, subject))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info, _ = details(caught.value)
    assert info.reason == "CONSENT_REQUIRED"
    assert dict(info.metadata) == {"purpose": EXPECTED_PURPOSES[method.name]}
    assert subject.certificate_number not in (caught.value.details() or "")
    assert simulator.app.calls.total == 0  # not even a sign-in

    # Consent to another purpose does not help; consent to this one lets the call through.
    others = [
        p
        for p in common.Purpose.values()
        if p and common.Purpose.Name(p) != info.metadata["purpose"]
    ]
    for purpose in others:
        await grant_consent(gated.channel, subject, purpose)
    with pytest.raises(grpc.aio.AioRpcError) as still:
        await raw_call(gated, method, request_with_subject(method, subject))
    assert details(still.value)[0].reason == "CONSENT_REQUIRED"
    await grant_consent(gated.channel, subject, common.Purpose.Value(info.metadata["purpose"]))
    past_the_gate: grpc.StatusCode = grpc.StatusCode.OK
    try:
        await raw_call(gated, method, request_with_subject(method, subject))
    except grpc.aio.AioRpcError as error:  # not built yet, or the rest of the request is empty
        past_the_gate = error.code()
    assert past_the_gate in (
        grpc.StatusCode.OK,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INVALID_ARGUMENT,
    )


async def test_consent_is_per_tenant_and_matches_on_the_document_not_the_name(
    gated: RunningSidecar, population: Population
) -> None:
    person = population.examples().employee
    await grant_consent(gated.channel, subject_of(person), metadata=OTHER_TENANT)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call_enrollment(gated, subject_of(person))
    assert details(caught.value)[0].reason == "CONSENT_REQUIRED"

    await grant_consent(gated.channel, subject_of(person))
    renamed = subject_of(person)
    renamed.name = "王不对"  # the gate lets it through; the platform checks the name
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call_enrollment(gated, renamed)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND


async def test_the_gate_validates_the_subject_once_and_the_servicer_uses_that_subject(
    gated: RunningSidecar, population: Population, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sidecar.compliance import consent_gate
    from sidecar.domain import subjects
    from sidecar.gateway import service

    checks: list[str] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        checks.append(str(args[0].certificate_number))
        return subjects.check_subject(*args, **kwargs)

    monkeypatch.setattr(consent_gate, "check_subject", counted)
    monkeypatch.setattr(service, "check_subject", counted)
    person = population.examples().employee
    await grant_consent(gated.channel, subject_of(person))
    checks.clear()
    answer = await call_enrollment(gated, subject_of(person))
    assert answer.person.certificate_number == person.certno  # the gate's subject was asked for
    assert checks == [person.certno]  # once, by the gate

    # A subject the gate cannot validate is passed on; the servicer names every bad field.
    bad = subject_of(person)
    bad.certificate_number = person.certno[:-1] + ("0" if person.certno[-1] != "0" else "1")
    bad.name = ""
    checks.clear()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call_enrollment(gated, bad)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, violations = details(refused.value)
    assert {field for field, _ in violations} == {"subject.certificate_number", "subject.name"}
    assert len(checks) == 2  # the gate's, then the servicer's for the violations


# Grant, list, revoke ---------------------------------------------------------------------------


async def test_a_grant_records_everything_the_issue_asks_for(
    gated: RunningSidecar, population: Population
) -> None:
    subject = subject_of(population.examples().employee)
    request = grant_request(
        subject,
        common.PURPOSE_SETTLEMENT,
        notice_sm3_hex=sm3_hex(NOTICE_TEXT).upper(),
        channel_evidence="im-msg-0001",
        expire_time=later(3600),
    )
    granted = (
        await consents(gated.channel).GrantConsent(request, metadata=TENANT_METADATA)
    ).consent
    assert granted.consent_id
    assert granted.subject == subject
    assert granted.purpose == common.PURPOSE_SETTLEMENT
    assert granted.scope == request.scope
    assert granted.notice_version == request.notice_version
    assert granted.notice_sm3_hex == sm3_hex(NOTICE_TEXT)  # stored lower-case
    assert granted.channel_evidence == "im-msg-0001"
    assert granted.state == consent.CONSENT_STATE_ACTIVE
    assert granted.grant_operator == "im-bot-01"
    assert abs(granted.grant_time.ToDatetime(dt.UTC) - dt.datetime.now(dt.UTC)) < dt.timedelta(
        minutes=1
    )
    assert granted.expire_time.ToMicroseconds() == request.expire_time.ToMicroseconds()
    assert not granted.HasField("revoke_time") and granted.revoke_operator == ""

    listed = await consents(gated.channel).ListConsents(
        consent.ListConsentsRequest(subject=subject), metadata=TENANT_METADATA
    )
    assert list(listed.consents) == [granted]
    assert listed.next_page_token == ""


async def test_grant_is_idempotent_by_request_id(
    gated: RunningSidecar, population: Population
) -> None:
    stub = consents(gated.channel)
    request = grant_request(subject_of(population.examples().employee), common.PURPOSE_SETTLEMENT)
    first = await stub.GrantConsent(request, metadata=TENANT_METADATA)
    again = await stub.GrantConsent(request, metadata=TENANT_METADATA)
    assert again == first
    other_tenant = await stub.GrantConsent(request, metadata=OTHER_TENANT)  # key scope: tenant
    assert other_tenant.consent.consent_id != first.consent.consent_id

    changed = consent.GrantConsentRequest()
    changed.CopyFrom(request)
    changed.scope = "another scope"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GrantConsent(changed, metadata=TENANT_METADATA)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert details(caught.value)[0].reason == "IDEMPOTENCY_KEY_REUSED"
    listed = await stub.ListConsents(
        consent.ListConsentsRequest(subject=request.subject), metadata=TENANT_METADATA
    )
    assert len(listed.consents) == 1


async def test_concurrent_repeats_record_one_consent(
    gated: RunningSidecar, population: Population
) -> None:
    stub = consents(gated.channel)
    request = grant_request(subject_of(population.examples().employee), common.PURPOSE_SETTLEMENT)
    answers = await asyncio.gather(
        *(stub.GrantConsent(request, metadata=TENANT_METADATA) for _ in range(8))
    )
    assert len({a.consent.consent_id for a in answers}) == 1


async def test_a_revocation_holds_for_the_next_call(
    gated: RunningSidecar, population: Population, simulator: RunningSimulator
) -> None:
    subject = subject_of(population.examples().employee)
    await grant_consent(gated.channel, subject)
    await grant_consent(gated.channel, subject)  # two active consents for the same purpose
    await call_enrollment(gated, subject)
    calls = simulator.app.calls.count("1101")

    revoked = await consents(gated.channel).RevokeConsent(
        consent.RevokeConsentRequest(
            request_id="revoke-1",
            subject_purpose=consent.SubjectPurpose(
                subject=subject, purpose=common.PURPOSE_ENROLLMENT_QUERY
            ),
        ),
        metadata=(*OTHER_TENANT[:1], ("x-yibao-operator", "employee-self")),
    )
    # another tenant revokes nothing of ours
    assert list(revoked.consents) == []
    revoked = await consents(gated.channel).RevokeConsent(
        consent.RevokeConsentRequest(
            request_id="revoke-1",
            subject_purpose=consent.SubjectPurpose(
                subject=subject, purpose=common.PURPOSE_ENROLLMENT_QUERY
            ),
        ),
        metadata=TENANT_METADATA,
    )
    assert len(revoked.consents) == 2
    assert all(c.state == consent.CONSENT_STATE_REVOKED for c in revoked.consents)
    assert all(
        c.revoke_operator == "im-bot-01" and c.HasField("revoke_time") for c in revoked.consents
    )
    assert all(c.subject == subject for c in revoked.consents)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call_enrollment(gated, subject)
    assert details(caught.value)[0].reason == "CONSENT_REQUIRED"
    assert simulator.app.calls.count("1101") == calls


async def test_revoke_by_id_unknown_id_and_revoking_twice(
    gated: RunningSidecar, population: Population
) -> None:
    stub = consents(gated.channel)
    granted = await grant_consent(gated.channel, subject_of(population.examples().employee))

    def by_id(request_id: str, consent_id: str) -> consent.RevokeConsentRequest:
        return consent.RevokeConsentRequest(request_id=request_id, consent_id=consent_id)

    with pytest.raises(grpc.aio.AioRpcError) as foreign:
        await stub.RevokeConsent(by_id("r0", granted.consent_id), metadata=OTHER_TENANT)
    assert foreign.value.code() == grpc.StatusCode.NOT_FOUND
    assert details(foreign.value)[0].reason == "CONSENT_NOT_FOUND"

    first = (
        await stub.RevokeConsent(by_id("r1", granted.consent_id), metadata=TENANT_METADATA)
    ).consents
    assert [c.consent_id for c in first] == [granted.consent_id]
    assert first[0].state == consent.CONSENT_STATE_REVOKED
    # By id the request names no person: the answer carries the certificate type only.
    assert first[0].subject == common.DataSubject(
        certificate_type=common.CERTIFICATE_TYPE_RESIDENT_ID_CARD
    )
    twice = (
        await stub.RevokeConsent(by_id("r2", granted.consent_id), metadata=TENANT_METADATA)
    ).consents
    assert list(twice) == list(first)  # unchanged: same revocation time and operator

    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await stub.RevokeConsent(by_id("r3", "no-such-consent"), metadata=TENANT_METADATA)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    # a NOT_FOUND does not use up the key
    again = await stub.RevokeConsent(by_id("r3", granted.consent_id), metadata=TENANT_METADATA)
    assert again.consents[0].consent_id == granted.consent_id


async def test_list_pages_newest_first_with_filters(
    gated: RunningSidecar, population: Population
) -> None:
    stub = consents(gated.channel)
    subject = subject_of(population.examples().resident)
    made = [
        await grant_consent(gated.channel, subject, purpose)
        for purpose in (
            common.PURPOSE_ENROLLMENT_QUERY,
            common.PURPOSE_SETTLEMENT,
            common.PURPOSE_ENROLLMENT_QUERY,
            common.PURPOSE_ACCOUNT_QUERY,
            common.PURPOSE_ENROLLMENT_QUERY,
        )
    ]
    await stub.RevokeConsent(
        consent.RevokeConsentRequest(request_id="r-one", consent_id=made[0].consent_id),
        metadata=TENANT_METADATA,
    )
    await grant_consent(gated.channel, subject_of(population.examples().employee))  # someone else

    seen: list[consent.Consent] = []
    token = ""
    pages = 0
    while True:
        page = await stub.ListConsents(
            consent.ListConsentsRequest(subject=subject, page_size=2, page_token=token),
            metadata=TENANT_METADATA,
        )
        seen += page.consents
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert pages == 3
    assert [c.consent_id for c in seen] == [c.consent_id for c in reversed(made)]

    async def ids(**filters: Any) -> list[str]:
        page = await stub.ListConsents(
            consent.ListConsentsRequest(**{"subject": subject, **filters}),
            metadata=TENANT_METADATA,
        )
        return [c.consent_id for c in page.consents]

    enrollment = [made[4].consent_id, made[2].consent_id, made[0].consent_id]
    assert await ids(purpose=common.PURPOSE_ENROLLMENT_QUERY) == enrollment
    assert await ids(states=[consent.CONSENT_STATE_REVOKED]) == [made[0].consent_id]
    assert (
        await ids(purpose=common.PURPOSE_ENROLLMENT_QUERY, states=[consent.CONSENT_STATE_ACTIVE])
        == enrollment[:2]
    )
    assert await ids(states=[consent.CONSENT_STATE_EXPIRED]) == []
    assert await ids(states=[consent.CONSENT_STATE_UNSPECIFIED]) == [
        c.consent_id for c in reversed(made)
    ]
    assert await ids(subject=subject_of(population.examples().suspended)) == []

    first = await stub.ListConsents(
        consent.ListConsentsRequest(subject=subject, page_size=2), metadata=TENANT_METADATA
    )
    for changed in (
        {"subject": subject_of(population.examples().employee)},
        {"purpose": common.PURPOSE_SETTLEMENT},
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListConsents(
                consent.ListConsentsRequest(
                    **{"subject": subject, **changed},
                    page_token=first.next_page_token,  # type: ignore[arg-type]
                ),
                metadata=TENANT_METADATA,
            )
        assert details(caught.value)[1] == [
            ("page_token", "is not a token of this listing (same tenant and filters)")
        ]
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.ListConsents(
            consent.ListConsentsRequest(subject=subject, page_token=first.next_page_token),
            metadata=OTHER_TENANT,
        )


# Bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field", "description"),
    [
        ({"request_id": ""}, "request_id", "must not be empty"),
        ({"request_id": "a b"}, "request_id",
         "must be 1-64 characters of A-Z, a-z, 0-9, '_' and '-'"),
        ({"request_id": "x" * 65}, "request_id",
         "must be 1-64 characters of A-Z, a-z, 0-9, '_' and '-'"),
        ({"subject": None}, "subject", "is required"),
        ({"subject": common.DataSubject(certificate_type=common.CERTIFICATE_TYPE_RESIDENT_ID_CARD,
                                        certificate_number="110105194912310020", name="张三")},
         "subject.certificate_number", "check digit does not match (GB 11643)"),
        ({"purpose": common.PURPOSE_UNSPECIFIED}, "purpose",
         "is required (not PURPOSE_UNSPECIFIED)"),
        ({"purpose": 99}, "purpose", "must be a known purpose"),
        ({"scope": ""}, "scope", "must not be empty"),
        ({"scope": "   "}, "scope", "must not be empty"),
        ({"scope": "范" * 2001}, "scope", "must be at most 2000 characters"),
        ({"scope": "a\x00b"}, "scope", "must not contain control characters"),
        ({"notice_version": ""}, "notice_version", "must not be empty"),
        ({"notice_version": "v" * 65}, "notice_version", "must be at most 64 characters"),
        ({"notice_version": "v1\n"}, "notice_version", "must not contain control characters"),
        ({"notice_sm3_hex": ""}, "notice_sm3_hex",
         "must be 64 hex digits: the SM3 hash of the notice"),
        ({"notice_sm3_hex": "g" * 64}, "notice_sm3_hex",
         "must be 64 hex digits: the SM3 hash of the notice"),
        ({"notice_sm3_hex": "a" * 63}, "notice_sm3_hex",
         "must be 64 hex digits: the SM3 hash of the notice"),
        ({"channel_evidence": ""}, "channel_evidence", "must not be empty"),
        ({"channel_evidence": "m" * 257}, "channel_evidence", "must be at most 256 characters"),
        ({"expire_time": "past"}, "expire_time", "must be in the future"),
        ({"expire_time": "invalid"}, "expire_time", "must be a valid timestamp"),
    ],
)  # fmt: skip
async def test_every_bad_grant_field_is_named(
    gated: RunningSidecar,
    population: Population,
    changes: dict[str, Any],
    field: str,
    description: str,
) -> None:
    request = grant_request(subject_of(population.examples().employee), common.PURPOSE_SETTLEMENT)
    for key, value in changes.items():
        if value is None:
            request.ClearField(key)
        elif value == "past":
            request.expire_time.CopyFrom(later(-1))
        elif value == "invalid":
            request.expire_time.seconds, request.expire_time.nanos = 1, -5
        else:
            setattr(request, key, value) if not isinstance(value, common.DataSubject) else (
                request.subject.CopyFrom(value)
            )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await consents(gated.channel).GrantConsent(request, metadata=TENANT_METADATA)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, violations = details(caught.value)
    assert info.reason == "INVALID_REQUEST"
    assert violations == [(field, description)]
    listed = await consents(gated.channel).ListConsents(
        consent.ListConsentsRequest(subject=subject_of(population.examples().employee)),
        metadata=TENANT_METADATA,
    )
    assert list(listed.consents) == []  # nothing half-written


async def test_every_bad_revoke_and_list_field_is_named(
    gated: RunningSidecar, population: Population
) -> None:
    stub = consents(gated.channel)
    subject = subject_of(population.examples().employee)

    async def violations_of(call: Any) -> list[tuple[str, str]]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        return details(caught.value)[1]

    assert await violations_of(
        stub.RevokeConsent(consent.RevokeConsentRequest(), metadata=TENANT_METADATA)
    ) == [
        ("request_id", "must not be empty"),
        ("target", "is required: consent_id or subject_purpose"),
    ]
    assert await violations_of(
        stub.RevokeConsent(
            consent.RevokeConsentRequest(request_id="r", consent_id="bad id!"),
            metadata=TENANT_METADATA,
        )
    ) == [("consent_id", "must be 1-64 of A-Z a-z 0-9 _ -")]
    assert await violations_of(
        stub.RevokeConsent(
            consent.RevokeConsentRequest(request_id="r", subject_purpose=consent.SubjectPurpose()),
            metadata=TENANT_METADATA,
        )
    ) == [
        ("subject_purpose.subject", "is required"),
        ("subject_purpose.purpose", "is required (not PURPOSE_UNSPECIFIED)"),
    ]
    assert await violations_of(
        stub.ListConsents(
            consent.ListConsentsRequest(
                subject=subject,
                purpose=42,
                states=[consent.CONSENT_STATE_ACTIVE, 9],
                page_size=-1,  # type: ignore[list-item]
            ),
            metadata=TENANT_METADATA,
        )
    ) == [
        ("purpose", "must be a known purpose"),
        ("states[1]", "must be a known consent state"),
        ("page_size", "must not be negative"),
    ]
    assert await violations_of(
        stub.ListConsents(
            consent.ListConsentsRequest(subject=subject, page_token="not-a-token"),
            metadata=TENANT_METADATA,
        )
    ) == [("page_token", "is not a token of this listing (same tenant and filters)")]


# Replicas and outages -----------------------------------------------------------------------


async def test_a_revocation_on_one_replica_holds_on_another(
    simulator: RunningSimulator, population: Population, backend: StoreUnderTest, tmp_path: Path
) -> None:
    subject = subject_of(population.examples().employee)
    with contextlib.ExitStack() as dirs:
        import shutil
        import tempfile

        a, b = (Path(tempfile.mkdtemp(prefix="ys-", dir="/tmp")) for _ in range(2))
        dirs.callback(shutil.rmtree, a, True)
        dirs.callback(shutil.rmtree, b, True)
        shared_key = {"pseudonym_key_file": settings_for(simulator, a).consent.pseudonym_key_file}
        settings_a = gated_settings(simulator, a, backend.config)
        settings_b = gated_settings(simulator, b, backend.config)
        settings_b = settings_b.model_copy(
            update={"consent": settings_b.consent.model_copy(update=shared_key)}
        )
        async with running_sidecar(settings_a) as one, running_sidecar(settings_b) as two:
            await grant_consent(one.channel, subject)
            await call_enrollment(two, subject)  # granted on one, seen on two
            await consents(one.channel).RevokeConsent(
                consent.RevokeConsentRequest(
                    request_id="revoke-everywhere",
                    subject_purpose=consent.SubjectPurpose(
                        subject=subject, purpose=common.PURPOSE_ENROLLMENT_QUERY
                    ),
                ),
                metadata=TENANT_METADATA,
            )
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call_enrollment(two, subject)
            assert details(caught.value)[0].reason == "CONSENT_REQUIRED"


@pytest.mark.slow
async def test_a_store_that_is_down_fails_closed_and_nothing_reaches_the_platform(
    gated: RunningSidecar,
    population: Population,
    simulator: RunningSimulator,
    backend: StoreUnderTest,
) -> None:
    subject = subject_of(population.examples().employee)
    await grant_consent(gated.channel, subject)
    await backend.take_down(gated.sidecar.store)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call_enrollment(gated, subject)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    info, _ = details(caught.value)
    assert info.reason == "STORE_UNAVAILABLE"
    assert simulator.app.calls.total == 0
    for call in (
        consents(gated.channel).GrantConsent(
            grant_request(subject, common.PURPOSE_SETTLEMENT), metadata=TENANT_METADATA
        ),
        consents(gated.channel).ListConsents(
            consent.ListConsentsRequest(subject=subject), metadata=TENANT_METADATA
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as down:
            await call
        assert down.value.code() == grpc.StatusCode.UNAVAILABLE
        assert details(down.value)[0].reason == "STORE_UNAVAILABLE"


# At rest -------------------------------------------------------------------------------------


async def test_the_ledger_holds_no_document_number_or_name(
    gated: RunningSidecar, population: Population, backend: StoreUnderTest
) -> None:
    people = population.people[:6]
    for person in people:
        await grant_consent(gated.channel, subject_of(person))
    if backend.config.backend == "sqlite":
        await gated.sidecar.store.close()  # checkpoint the WAL into the file we read
        raw = b"".join(p.read_bytes() for p in backend.config.sqlite_path.parent.iterdir())
    else:
        assert backend.direct_dsn is not None
        with psycopg.connect(backend.direct_dsn) as conn:
            rows = conn.execute(
                "SELECT row_to_json(g)::text FROM consent_grants g UNION ALL "
                "SELECT row_to_json(r)::text FROM consent_requests r"
            ).fetchall()
        assert len(rows) == 2 * len(people)
        raw = "\n".join(row[0] for row in rows).encode()
    for person in people:
        assert person.certno.encode() not in raw
        assert person.psn_name.encode() not in raw

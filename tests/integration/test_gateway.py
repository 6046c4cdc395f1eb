"""GetEnrollment end to end: IM client -> sidecar (gRPC, Unix socket) -> simulator (mTLS)."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from sidecar._proto.yibao.gateway.v1 import common_pb2 as common
from sidecar._proto.yibao.gateway.v1 import gateway_pb2 as gateway
from sidecar._proto.yibao.gateway.v1 import gateway_pb2_grpc as gateway_grpc
from tests.integration.conftest import TENANT_METADATA, RunningSidecar
from yibao_devkit.simulator.population import Person, Population
from yibao_devkit.simulator.server import RunningSimulator


def subject_of(person: Person) -> common.DataSubject:
    return common.DataSubject(
        certificate_type=common.CERTIFICATE_TYPE_RESIDENT_ID_CARD,
        certificate_number=person.certno,
        name=person.psn_name,
    )


def details(
    error: grpc.aio.AioRpcError,
) -> tuple[error_details_pb2.ErrorInfo, list[tuple[str, str]]]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "the error carries no google.rpc.Status"
    info = error_details_pb2.ErrorInfo()
    violations: list[tuple[str, str]] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [(v.field, v.description) for v in bad.field_violations]
    return info, violations


async def call_enrollment(
    sidecar: RunningSidecar, subject: common.DataSubject, metadata=TENANT_METADATA
):  # type: ignore[no-untyped-def]
    stub = gateway_grpc.InsuranceGatewayStub(sidecar.channel)
    return await stub.GetEnrollment(
        gateway.GetEnrollmentRequest(subject=subject), metadata=metadata
    )


async def test_enrollment_comes_back_from_the_platform(
    sidecar: RunningSidecar, population: Population, simulator: RunningSimulator
) -> None:
    person = population.examples().employee
    answer = await call_enrollment(sidecar, subject_of(person))

    assert answer.person.certificate_number == person.certno
    assert answer.person.name == person.psn_name
    assert answer.person.birth_date == person.brdy.isoformat()
    assert answer.person.certificate_type == common.CERTIFICATE_TYPE_RESIDENT_ID_CARD
    assert [e.insurance_type_code for e in answer.enrollments] == [
        e.insutype for e in person.insuinfo
    ]
    first, expected = answer.enrollments[0], person.insuinfo[0]
    assert first.insurance_type == common.INSURANCE_TYPE_EMPLOYEE_BASIC
    assert first.status == common.ENROLLMENT_STATUS_ENROLLED
    assert first.enrollment_date == expected.psn_insu_date.isoformat()
    assert first.employer_name == expected.emp_name
    assert first.insured_area_division_code == expected.insuplc_admdvs
    # Signed in once (9001), then one 1101 per call.
    assert simulator.app.calls.count("9001") == 1
    assert simulator.app.calls.count("1101") == 1
    await call_enrollment(sidecar, subject_of(person))
    assert simulator.app.calls.count("9001") == 1
    assert simulator.app.calls.count("1101") == 2


async def test_suspended_enrollment_reports_its_dates(
    sidecar: RunningSidecar, population: Population
) -> None:
    person = population.examples().suspended
    answer = await call_enrollment(sidecar, subject_of(person))
    suspended = [e for e in answer.enrollments if e.status == common.ENROLLMENT_STATUS_SUSPENDED]
    assert suspended
    assert suspended[0].suspension_date == person.insuinfo[0].paus_insu_date.isoformat()  # type: ignore[union-attr]


async def test_unknown_person_is_not_found_with_the_platform_message(
    sidecar: RunningSidecar, population: Population
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call_enrollment(sidecar, subject_of(population.examples().unknown))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    info, _ = details(caught.value)
    assert info.reason == "PERSON_NOT_FOUND"
    assert info.domain == "yibao-sidecar.gateway"
    assert info.metadata["platform_code"] == "-1"
    assert info.metadata["platform_message"]


async def test_name_mismatch_is_refused(sidecar: RunningSidecar, population: Population) -> None:
    subject = subject_of(population.examples().employee)
    subject.name = "王不对"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call_enrollment(sidecar, subject)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert details(caught.value)[0].metadata["platform_message"]


async def test_every_bad_field_is_named_and_nothing_is_sent(
    sidecar: RunningSidecar, population: Population, simulator: RunningSimulator
) -> None:
    person = population.examples().employee
    wrong = person.certno[:17] + ("0" if person.certno[17] != "0" else "1")
    subject = common.DataSubject(
        certificate_type=common.CERTIFICATE_TYPE_RESIDENT_ID_CARD, certificate_number=wrong, name=""
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call_enrollment(sidecar, subject)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, violations = details(caught.value)
    assert info.reason == "INVALID_REQUEST"
    assert violations == [
        ("subject.certificate_number", "check digit does not match (GB 11643)"),
        ("subject.name", "must not be empty"),
    ]
    assert wrong not in caught.value.details()
    assert simulator.app.calls.total == 0


@pytest.mark.parametrize(
    ("subject", "field", "description"),
    [
        (common.DataSubject(certificate_number="X1", name="张三"), "subject.certificate_type",
         "must be a known certificate type"),
        (common.DataSubject(certificate_type=common.CERTIFICATE_TYPE_FOREIGN_PASSPORT,
                            certificate_number="E" * 51, name="Ann"),
         "subject.certificate_number", "must be at most 50 characters"),
        (common.DataSubject(certificate_type=common.CERTIFICATE_TYPE_FOREIGN_PASSPORT,
                            certificate_number="E1234567", name="名" * 51),
         "subject.name", "must be at most 50 characters"),
    ],
)  # fmt: skip
async def test_other_bad_fields(
    sidecar: RunningSidecar, subject: common.DataSubject, field: str, description: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call_enrollment(sidecar, subject)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (field, description) in details(caught.value)[1]


async def test_missing_subject(sidecar: RunningSidecar) -> None:
    stub = gateway_grpc.InsuranceGatewayStub(sidecar.channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetEnrollment(gateway.GetEnrollmentRequest(), metadata=TENANT_METADATA)
    assert details(caught.value)[1] == [("subject", "is required")]


@pytest.mark.parametrize(
    ("metadata", "header"),
    [
        ((), "x-yibao-tenant"),
        ((("x-yibao-tenant", "acme"),), "x-yibao-operator"),
        ((("x-yibao-tenant", "acme corp"), ("x-yibao-operator", "op")), "x-yibao-tenant"),
        ((("x-yibao-tenant", "acme"), ("x-yibao-operator", "o" * 31)), "x-yibao-operator"),
    ],
)
async def test_missing_or_bad_caller_metadata_is_unauthenticated(
    sidecar: RunningSidecar,
    population: Population,
    metadata: tuple[tuple[str, str], ...],
    header: str,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call_enrollment(
            sidecar, subject_of(population.examples().employee), metadata=metadata
        )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    info, _ = details(caught.value)
    assert info.reason == "CALLER_UNAUTHENTICATED"
    assert info.metadata["header"] == header


async def test_refusals_leave_no_personal_data_in_the_logs(
    sidecar: RunningSidecar, population: Population, caplog: pytest.LogCaptureFixture
) -> None:
    from sidecar.observability.logs import JsonFormatter

    caplog.set_level("DEBUG")
    unknown, known = population.examples().unknown, population.examples().employee
    bad = subject_of(known)
    bad.certificate_number = known.certno[:17] + ("0" if known.certno[17] != "0" else "1")
    for subject, metadata in (
        (subject_of(unknown), TENANT_METADATA),
        (bad, TENANT_METADATA),
        (subject_of(known), ()),
    ):
        with pytest.raises(grpc.aio.AioRpcError):
            await call_enrollment(sidecar, subject, metadata)
    await call_enrollment(sidecar, subject_of(known))
    text = "\n".join(JsonFormatter().format(record) for record in caplog.records)
    assert '"event": "rpc"' in text
    for secret in (
        unknown.certno,
        unknown.psn_name,
        known.certno,
        known.psn_name,
        bad.certificate_number,
    ):
        assert secret not in text

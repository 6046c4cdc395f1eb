"""CheckEligibility (待遇资格): 1101 then 2001; not being eligible is an answer, not an error."""

from __future__ import annotations

import grpc
import pytest

from sidecar._proto.yibao.gateway.v1 import common_pb2 as common
from sidecar._proto.yibao.gateway.v1 import gateway_pb2 as gateway
from sidecar._proto.yibao.gateway.v1 import gateway_pb2_grpc as gateway_grpc
from sidecar.domain.beijing import beijing_today
from tests.integration.conftest import TENANT_METADATA, RunningSidecar
from tests.integration.test_gateway import details, subject_of
from yibao_devkit.simulator.population import Person, Population
from yibao_devkit.simulator.server import RunningSimulator

TODAY = beijing_today().isoformat()  # the sidecar judges dates in Beijing


def question(person: Person, **changes: object) -> gateway.CheckEligibilityRequest:
    fields: dict[str, object] = {
        "subject": subject_of(person),
        "insurance_type": common.INSURANCE_TYPE_EMPLOYEE_BASIC,
        "medical_type_code": "11",
        "begin_date": TODAY,
    }
    fields.update(changes)
    return gateway.CheckEligibilityRequest(**fields)  # type: ignore[arg-type]


async def ask(
    sidecar: RunningSidecar, request: gateway.CheckEligibilityRequest
) -> gateway.CheckEligibilityResponse:
    stub = gateway_grpc.InsuranceGatewayStub(sidecar.channel)
    return await stub.CheckEligibility(request, metadata=TENANT_METADATA)


async def test_an_enrolled_employee_is_eligible(
    sidecar: RunningSidecar, population: Population, simulator: RunningSimulator
) -> None:
    answer = await ask(sidecar, question(population.examples().employee))
    assert answer.eligible
    assert answer.refusal_reason == ""
    assert answer.checks and all(check.eligible for check in answer.checks)
    assert (
        answer.benefit_begin_date
        == population.examples().employee.insuinfo[0].psn_insu_date.isoformat()
    )
    assert simulator.app.calls.count("1101") == 1
    assert simulator.app.calls.count("2001") == 1


async def test_a_suspended_enrollment_is_a_no_with_the_platforms_reason(
    sidecar: RunningSidecar, population: Population
) -> None:
    answer = await ask(sidecar, question(population.examples().suspended))
    assert not answer.eligible
    assert answer.refusal_reason
    assert not answer.checks[0].eligible


async def test_an_unknown_person_is_not_found(
    sidecar: RunningSidecar, population: Population
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await ask(sidecar, question(population.examples().unknown))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert details(caught.value)[0].reason == "PERSON_NOT_FOUND"


async def test_a_medical_type_the_platform_does_not_know_is_its_refusal(
    sidecar: RunningSidecar, population: Population
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await ask(sidecar, question(population.examples().employee, medical_type_code="99"))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = details(caught.value)[0]
    assert info.reason == "PLATFORM_REFUSED"
    assert info.metadata["platform_message"]


async def test_every_bad_field_is_named_before_anything_is_sent(
    sidecar: RunningSidecar, population: Population, simulator: RunningSimulator
) -> None:
    request = question(
        population.examples().employee,
        insurance_type=common.INSURANCE_TYPE_UNSPECIFIED,
        medical_type_code="",
        begin_date="2026-02-30",
        institution_code="short",
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await ask(sidecar, request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [field for field, _ in details(caught.value)[1]] == [
        "insurance_type", "medical_type_code", "begin_date", "institution_code",
    ]  # fmt: skip
    reversed_dates = question(
        population.examples().employee, begin_date=TODAY, end_date="2000-01-01"
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await ask(sidecar, reversed_dates)
    assert details(caught.value)[1] == [("end_date", "must not be before begin_date")]
    assert simulator.app.calls.total == 0

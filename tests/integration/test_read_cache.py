"""The read cache in the running sidecar: enrollment, account and eligibility answers are reused
for the TTL, per subject, and a registration for the subject drops them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from sidecar._proto.yibao.gateway.v1 import common_pb2 as common
from sidecar._proto.yibao.gateway.v1 import gateway_pb2 as gateway
from sidecar.observability import telemetry
from tests.integration.conftest import TENANT_METADATA
from tests.integration.functions_support import (
    cancel,
    get_account,
    sidecar_with,
    stub,
    submission,
    submit,
    today,
)
from tests.integration.test_gateway import subject_of
from tests.sidecar.gateway.test_read_cache import counts
from yibao_devkit.simulator.population import Population
from yibao_devkit.simulator.server import RunningSimulator


async def test_answers_are_reused_per_subject_and_a_registration_invalidates_them(
    simulator: RunningSimulator, population: Population, short_dir: Path
) -> None:
    person, other = population.examples().employee, population.people[4]
    reader = InMemoryMetricReader()
    observability = telemetry.build(readers=(reader,))
    calls = simulator.app.calls
    eligibility = gateway.CheckEligibilityRequest(
        subject=subject_of(person),
        insurance_type=common.INSURANCE_TYPE_EMPLOYEE_BASIC,
        medical_type_code="11",
        begin_date=today().isoformat(),
    )
    async with sidecar_with(
        simulator, short_dir, observability, cache={"ttl_seconds": 60}
    ) as sidecar:
        gateway_stub = stub(sidecar)

        async def everything() -> None:
            await gateway_stub.GetEnrollment(
                gateway.GetEnrollmentRequest(subject=subject_of(person)),
                metadata=TENANT_METADATA,
            )
            await get_account(sidecar, person)
            await gateway_stub.CheckEligibility(eligibility, metadata=TENANT_METADATA)

        await everything()
        await everything()
        assert [calls.count(i) for i in ("1101", "5206", "5307", "2001")] == [3, 1, 1, 1]
        await get_account(sidecar, other)  # another subject: a miss of its own
        assert calls.count("1101") == 4
        # a name that does not match is never answered from the cache
        wrong = common.DataSubject()
        wrong.CopyFrom(subject_of(person))
        wrong.name = "不是本人"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gateway_stub.GetEnrollment(
                gateway.GetEnrollmentRequest(subject=wrong), metadata=TENANT_METADATA
            )
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        made = (await submit(sidecar, submission(person))).registration
        before = calls.count("1101")
        await everything()  # invalidated by the registration: all three are read again
        assert calls.count("1101") == before + 3
        await everything()
        assert calls.count("1101") == before + 3
        await cancel(sidecar, person, made.registration_id)
        await get_account(sidecar, person)
        await get_account(sidecar, other)  # the other subject's entry survived
        assert calls.count("1101") == before + 3 + 2  # cancel's 1101 and the account's
    seen = counts(reader)
    assert seen[("GetAccount", "hit")] == 3
    assert seen[("GetAccount", "miss")] == 4
    assert seen[("GetEnrollment", "hit")] == 2 and seen[("CheckEligibility", "hit")] == 2


async def test_entries_expire_after_the_ttl(
    simulator: RunningSimulator, population: Population, short_dir: Path
) -> None:
    person = population.examples().employee
    async with sidecar_with(simulator, short_dir, cache={"ttl_seconds": 0.5}) as sidecar:
        await get_account(sidecar, person)
        await get_account(sidecar, person)
        assert simulator.app.calls.count("5206") == 1
        await asyncio.sleep(0.6)
        await get_account(sidecar, person)
    assert simulator.app.calls.count("5206") == 2


async def test_the_cache_is_off_by_default(
    simulator: RunningSimulator, population: Population, short_dir: Path
) -> None:
    person = population.examples().employee
    async with sidecar_with(simulator, short_dir) as sidecar:
        await get_account(sidecar, person)
        await get_account(sidecar, person)
    assert simulator.app.calls.count("5206") == 2

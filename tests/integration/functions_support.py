"""Helpers for the GetAccount, registration and cache tests: settings, requests, stubs."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sidecar._proto.yibao.gateway.v1 import common_pb2 as common
from sidecar._proto.yibao.gateway.v1 import gateway_pb2 as gateway
from sidecar._proto.yibao.gateway.v1 import gateway_pb2_grpc as gateway_grpc
from sidecar.config import Settings, StoreConfig
from sidecar.domain.beijing import beijing_today
from sidecar.observability import telemetry
from tests.integration.conftest import (
    TENANT_METADATA,
    RunningSidecar,
    audit_trail,
    running_sidecar,
    settings_for,
)
from tests.integration.consent_support import consent_to
from tests.integration.test_gateway import subject_of
from yibao_devkit.simulator.population import Person
from yibao_devkit.simulator.server import RunningSimulator

TARGET = "310115"  # 上海市浦东新区: a real division, never the simulator's insured areas


def today() -> dt.date:
    return beijing_today()


def settings_with(
    simulator: RunningSimulator,
    socket_dir: Path,
    *,
    store: StoreConfig | None = None,
    **sections: dict[str, Any],
) -> Settings:
    """``settings_for`` plus overrides per section (``offsite={...}``, ``cache={...}``)."""
    data = settings_for(simulator, socket_dir, audit_trail()).model_dump(mode="json")
    if store is not None:
        data["store"] = store.model_dump(mode="json")
    for section, values in sections.items():
        if section in ("transactions", "msgid", "resilience"):
            data["platform"].setdefault(section, {}).update(values)
        else:
            data.setdefault(section, {}).update(values)
    return Settings.model_validate(data)


@contextlib.asynccontextmanager
async def sidecar_with(
    simulator: RunningSimulator,
    socket_dir: Path,
    observability: telemetry.Telemetry | None = None,
    *,
    store: StoreConfig | None = None,
    **sections: dict[str, Any],
) -> AsyncIterator[RunningSidecar]:
    settings = settings_with(simulator, socket_dir, store=store, **sections)
    async with running_sidecar(settings, observability) as running:
        # the first five people (the examples and one more) consent to every purpose
        people = simulator.app.population.people[:5]
        await consent_to(running.channel, [subject_of(person) for person in people])
        yield running


def stub(sidecar: RunningSidecar) -> gateway_grpc.InsuranceGatewayStub:
    return gateway_grpc.InsuranceGatewayStub(sidecar.channel)


def submission(person: Person, request_id: str = "reg-0001", **changes: Any) -> Any:
    fields: dict[str, Any] = {
        "request_id": request_id,
        "subject": subject_of(person),
        "insurance_type": common.INSURANCE_TYPE_EMPLOYEE_BASIC,
        "target_division_code": TARGET,
        "start_date": today().isoformat(),
        "end_date": (today() + dt.timedelta(days=90)).isoformat(),
        "reason": gateway.OFFSITE_REASON_RESIDENT_WORKING_ELSEWHERE,
        "contact_phone": "13912345678",
        "address": "上海市浦东新区世纪大道1号",
    }
    fields.update(changes)
    return gateway.SubmitOffsiteRegistrationRequest(**fields)


async def submit(
    sidecar: RunningSidecar, request: gateway.SubmitOffsiteRegistrationRequest, timeout: float = 10
) -> gateway.SubmitOffsiteRegistrationResponse:
    answer: gateway.SubmitOffsiteRegistrationResponse = await stub(
        sidecar
    ).SubmitOffsiteRegistration(request, metadata=TENANT_METADATA, timeout=timeout)
    return answer


async def cancel(
    sidecar: RunningSidecar,
    person: Person,
    registration_id: str,
    request_id: str = "cancel-0001",
    timeout: float = 10,
) -> gateway.CancelOffsiteRegistrationResponse:
    request = gateway.CancelOffsiteRegistrationRequest(
        request_id=request_id,
        subject=subject_of(person),
        registration_id=registration_id,
        reason="计划变更",
    )
    answer: gateway.CancelOffsiteRegistrationResponse = await stub(
        sidecar
    ).CancelOffsiteRegistration(request, metadata=TENANT_METADATA, timeout=timeout)
    return answer


async def list_registrations(
    sidecar: RunningSidecar, person: Person, **fields: Any
) -> gateway.ListOffsiteRegistrationsResponse:
    request = gateway.ListOffsiteRegistrationsRequest(subject=subject_of(person), **fields)
    answer: gateway.ListOffsiteRegistrationsResponse = await stub(sidecar).ListOffsiteRegistrations(
        request, metadata=TENANT_METADATA, timeout=10
    )
    return answer


async def get_account(
    sidecar: RunningSidecar, person: Person, timeout: float = 10, **fields: Any
) -> gateway.GetAccountResponse:
    request = gateway.GetAccountRequest(subject=subject_of(person), **fields)
    answer: gateway.GetAccountResponse = await stub(sidecar).GetAccount(
        request, metadata=TENANT_METADATA, timeout=timeout
    )
    return answer

"""The kit's error model and retries against the real sidecar: typed errors with every detail,
repeats only of retry-safe calls, with the same request (so the same request_id), within the
deadline."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from sidecar.domain.beijing import beijing_today
from tests.clients.test_functions import subject
from tests.integration.conftest import RunningSidecar
from tests.integration.functions_support import sidecar_with, submission
from yibao_client import (
    CallerIdentity,
    Client,
    InvalidArgument,
    PlatformRefused,
    RetryPolicy,
    Unauthenticated,
    Unavailable,
    connect_unix_async,
)
from yibao_client.v1 import common, consent, gateway
from yibao_devkit.simulator.faults import Fault, FaultKind
from yibao_devkit.simulator.population import Person, Population
from yibao_devkit.simulator.server import RunningSimulator

CALLER = CallerIdentity("acme-corp", "im-bot-01")
FAST = RetryPolicy(max_attempts=8, initial_backoff=0.05, max_backoff=0.2)


class Recorder(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Every attempt the client sends: (method, request_id or "")."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        self.sent.append((details.method.rsplit("/", 1)[-1], getattr(request, "request_id", "")))
        return continuation(details, request)


def recording_client(socket: str, retry: RetryPolicy = FAST) -> tuple[Client, Recorder]:
    recorder = Recorder()
    channel = grpc.intercept_channel(grpc.insecure_channel(f"unix:{socket}"), recorder)
    return Client(channel, CALLER, retry), recorder


def registrations_of(simulator: RunningSimulator, person: Person) -> int:
    return sum(r.active for r in simulator.app.state.registrations.of(person.psn_no or ""))


async def test_invalid_argument_carries_every_field_violation(
    sidecar: RunningSidecar, population: Population
) -> None:
    employee = population.examples().employee
    bad_subject = subject(employee)
    bad_subject.certificate_number = employee.certno[:-1] + (
        "0" if employee.certno[-1] != "0" else "1"
    )
    request = gateway.CheckEligibilityRequest(
        subject=bad_subject,
        insurance_type=common.INSURANCE_TYPE_EMPLOYEE_BASIC,
        medical_type_code="11",
        begin_date="2026-13-01",
    )
    async with connect_unix_async(
        sidecar.settings.server.socket_path, tenant="acme-corp", operator="im-bot-01"
    ) as client:
        with pytest.raises(InvalidArgument) as caught:
            await client.check_eligibility(request)
    error = caught.value
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "INVALID_REQUEST"
    assert error.domain == "yibao-sidecar.gateway"
    assert error.attempts == 1  # a bad request is never repeated
    fields = {v.field for v in error.field_violations}
    assert "subject.certificate_number" in fields
    assert all(v.description for v in error.field_violations)
    shown = error.as_dict()
    assert shown["error_info"] == {
        "reason": "INVALID_REQUEST",
        "domain": "yibao-sidecar.gateway",
        "metadata": {},
    }
    assert employee.certno not in str(shown)  # never the person's data


async def test_per_call_metadata_overrides_the_client_and_errors_name_the_header(
    sidecar: RunningSidecar, population: Population
) -> None:
    client, _ = recording_client(sidecar.settings.server.socket_path)
    request = gateway.GetEnrollmentRequest(subject=subject(population.examples().employee))
    with client, pytest.raises(Unauthenticated) as caught:
        await asyncio.to_thread(client.get_enrollment, request, operator="")
    assert caught.value.reason == "CALLER_UNAUTHENTICATED"
    assert caught.value.metadata["header"] == "x-yibao-operator"


async def test_a_read_failing_in_a_retry_safe_way_is_repeated(
    simulator: RunningSimulator, population: Population, short_dir: Path
) -> None:
    employee = population.examples().employee
    # The sidecar's own retries off, so that its PLATFORM_UNAVAILABLE reaches the client.
    async with sidecar_with(simulator, short_dir, resilience={"retry_attempts": 1}) as sidecar:
        client, sent = recording_client(sidecar.settings.server.socket_path)
        simulator.app.calls.reset()
        simulator.app.faults.set("1101", Fault(FaultKind.HTTP_5XX, times=1))
        with client:
            answer = await asyncio.to_thread(
                client.get_enrollment, gateway.GetEnrollmentRequest(subject=subject(employee))
            )
    assert answer.person.certificate_number == employee.certno
    assert sent.sent == [("GetEnrollment", ""), ("GetEnrollment", "")]
    assert simulator.app.calls.count("1101") == 2


async def test_a_mutating_call_is_repeated_with_the_same_request_id_and_acts_once(
    simulator: RunningSimulator, population: Population, short_dir: Path
) -> None:
    employee = population.examples().employee
    request_id = uuid.uuid4().hex
    policy = {"unknown_outcome_settle_seconds": 0.5}
    async with sidecar_with(
        simulator, short_dir, offsite=policy, resilience={"retry_attempts": 1}
    ) as sidecar:
        client, sent = recording_client(sidecar.settings.server.socket_path, FAST)
        simulator.app.calls.reset()
        # The platform's answer is lost: UNAVAILABLE / PLATFORM_UNAVAILABLE, then
        # REQUEST_IN_PROGRESS while the sidecar cannot tell whether it was made.
        simulator.app.faults.set("2501", Fault(FaultKind.HTTP_5XX, times=1))
        with client:
            made = await asyncio.to_thread(
                client.submit_offsite_registration,
                submission(employee, request_id, start_date=beijing_today().isoformat()),
            )
    assert made.registration.registration_id
    assert len(sent.sent) >= 2
    assert set(sent.sent) == {("SubmitOffsiteRegistration", request_id)}
    assert simulator.app.calls.count("2501") == 2  # the lost one, and one resent after the window
    assert registrations_of(simulator, employee) == 1


async def test_a_refusal_is_not_repeated(
    simulator: RunningSimulator, population: Population, short_dir: Path
) -> None:
    employee = population.examples().employee
    async with sidecar_with(simulator, short_dir) as sidecar:
        client, sent = recording_client(sidecar.settings.server.socket_path)
        simulator.app.calls.reset()
        simulator.app.faults.set(
            "2501", Fault(FaultKind.REFUSE, times=2, err_msg="备案地区暂停办理")
        )
        with client, pytest.raises(PlatformRefused) as caught:
            await asyncio.to_thread(
                client.submit_offsite_registration, submission(employee, uuid.uuid4().hex)
            )
        simulator.app.faults.clear()
    assert caught.value.attempts == 1
    assert caught.value.metadata["platform_message"] == "备案地区暂停办理"
    assert len(sent.sent) == 1
    assert simulator.app.calls.count("2501") == 1


def test_without_a_connection_only_retry_safe_calls_are_repeated(tmp_path: Path) -> None:
    """No sidecar: UNAVAILABLE without ErrorInfo. A read and a keyed mutation are repeated; a
    mutation without its idempotency key is not (a repeat could act twice)."""
    retry = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.02)
    client, sent = recording_client(str(tmp_path / "absent.sock"), retry)
    who = common.DataSubject(certificate_type=common.CERTIFICATE_TYPE_RESIDENT_ID_CARD)
    with client:
        with pytest.raises(Unavailable) as read:
            client.list_consents(consent.ListConsentsRequest(subject=who), timeout=10)
        with pytest.raises(Unavailable) as keyed:
            client.grant_consent(consent.GrantConsentRequest(request_id="k-1"), timeout=10)
        with pytest.raises(Unavailable) as unkeyed:
            client.grant_consent(consent.GrantConsentRequest(), timeout=10)
    assert (read.value.attempts, keyed.value.attempts, unkeyed.value.attempts) == (3, 3, 1)
    assert read.value.reason is None
    assert sent.sent == [("ListConsents", "")] * 3 + [("GrantConsent", "k-1")] * 3 + [
        ("GrantConsent", "")
    ]


def test_retries_stop_at_the_deadline(tmp_path: Path) -> None:
    """With a clock the test drives: the waits never run past the call's deadline."""
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    channel = grpc.insecure_channel(f"unix:{tmp_path / 'absent.sock'}")
    retry = RetryPolicy(max_attempts=100, initial_backoff=0.4, max_backoff=0.4)
    client = Client(channel, CALLER, retry, clock=lambda: now[0], sleep=sleep)
    with client, pytest.raises(Unavailable) as caught:
        client.list_consents(consent.ListConsentsRequest(), timeout=2.0)
    assert sum(slept) <= 2.0
    assert 1 < caught.value.attempts < 100

"""The fault matrix of the registration family: what the RPC answers and how often each
transaction reached the platform, for every fault switch of the simulator.

A mutating transaction whose answer is lost is never resent blindly: the sidecar looks for it
with 5304 first (see sidecar/gateway/registrations.py).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from tests.integration.conftest import RunningSidecar
from tests.integration.functions_support import cancel, sidecar_with, submission, submit
from tests.integration.test_gateway import details
from yibao_devkit.simulator.faults import Fault, FaultKind
from yibao_devkit.simulator.population import Person, Population
from yibao_devkit.simulator.server import RunningSimulator

SETTLE = 2.0  # offsite.unknown_outcome_settle_seconds in these tests
LATE = 2.5  # seconds a "latency beyond the deadline" answer comes late
DEADLINE = 1.5  # the caller's gRPC deadline in those cases


def counts(simulator: RunningSimulator, *infnos: str) -> tuple[int, ...]:
    return tuple(simulator.app.calls.count(infno) for infno in infnos)


def registrations_of(simulator: RunningSimulator, person: Person) -> int:
    return sum(r.active for r in simulator.app.state.registrations.of(person.psn_no or ""))


@pytest.mark.slow
async def test_submit_answer_lost_in_a_reset_or_5xx_is_resolved_then_resent_after_the_window(
    simulator: RunningSimulator, population: Population, short_dir: Path
) -> None:
    person = population.examples().employee
    policy = {"unknown_outcome_settle_seconds": SETTLE}
    faults = (Fault(FaultKind.RESET, times=1), Fault(FaultKind.HTTP_5XX, times=1))
    async with sidecar_with(simulator, short_dir, offsite=policy) as sidecar:
        for index, fault in enumerate(faults):
            simulator.app.calls.reset()
            request = submission(person, f"lost-{index}")
            simulator.app.faults.set("2501", fault)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await submit(sidecar, request)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert details(caught.value)[0].reason == "PLATFORM_UNAVAILABLE"
            assert counts(simulator, "1101", "2501", "5304") == (1, 1, 1)  # looked, not resent
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await submit(sidecar, request)  # too early to call it "not made"
            assert caught.value.code() == grpc.StatusCode.ABORTED
            assert details(caught.value)[0].reason == "REQUEST_IN_PROGRESS"
            assert counts(simulator, "1101", "2501", "5304") == (2, 1, 2)
            await asyncio.sleep(SETTLE)
            made = (await submit(sidecar, request)).registration
            assert counts(simulator, "1101", "2501", "5304") == (3, 2, 3)
            assert registrations_of(simulator, person) == 1
            assert (await submit(sidecar, request)).registration == made
            assert counts(simulator, "2501") == (2,)
            await cancel(sidecar, person, made.registration_id, f"undo-{index}")


@pytest.mark.parametrize("kind", [FaultKind.MALFORMED_JSON, FaultKind.COMMIT_THEN_DROP])
async def test_submit_performed_but_answer_unusable_is_found_by_the_query(
    simulator: RunningSimulator, population: Population, short_dir: Path, kind: FaultKind
) -> None:
    person = population.examples().employee
    simulator.app.faults.set("2501", Fault(kind, times=1))
    async with sidecar_with(simulator, short_dir) as sidecar:
        made = (await submit(sidecar, submission(person))).registration
        assert counts(simulator, "1101", "2501", "5304") == (1, 1, 1)
        assert made.registration_id and made.HasField("submit_time")
        assert (await submit(sidecar, submission(person))).registration == made
    assert counts(simulator, "2501") == (1,)
    assert registrations_of(simulator, person) == 1


@pytest.mark.slow
async def test_submit_past_the_deadline_is_resolved_by_a_repeat_without_resending(
    simulator: RunningSimulator, population: Population, short_dir: Path
) -> None:
    person = population.examples().employee
    simulator.app.faults.set("2501", Fault(FaultKind.LATENCY, times=1, seconds=LATE))
    policy = {"unknown_outcome_settle_seconds": 30.0}
    async with sidecar_with(simulator, short_dir, offsite=policy) as sidecar:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await submit(sidecar, submission(person), timeout=DEADLINE)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert counts(simulator, "1101", "2501", "5304") == (1, 1, 0)
        await asyncio.sleep(LATE)  # the platform performs it late
        made = (await submit(sidecar, submission(person))).registration
        assert made.registration_id
        assert counts(simulator, "1101", "2501", "5304") == (2, 1, 1)
    assert registrations_of(simulator, person) == 1


async def test_submit_refused_by_the_platform_is_final_and_replayed(
    simulator: RunningSimulator, population: Population, short_dir: Path
) -> None:
    person = population.examples().employee
    simulator.app.faults.set("2501", Fault(FaultKind.REFUSE, times=1, err_msg="备案地区暂停办理"))
    async with sidecar_with(simulator, short_dir) as sidecar:
        for _ in range(2):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await submit(sidecar, submission(person))
            assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            info = details(caught.value)[0]
            assert (info.reason, info.metadata["platform_message"]) == (
                "PLATFORM_REFUSED", "备案地区暂停办理",
            )  # fmt: skip
            assert counts(simulator, "1101", "2501", "5304") == (1, 1, 0)
    assert registrations_of(simulator, person) == 0


async def test_submit_with_an_expired_sign_in_signs_in_again(
    simulator: RunningSimulator, population: Population, short_dir: Path
) -> None:
    person = population.examples().employee
    simulator.app.faults.set("2501", Fault(FaultKind.EXPIRED_SIGN_IN, times=1))
    async with sidecar_with(simulator, short_dir) as sidecar:
        assert (await submit(sidecar, submission(person))).registration.registration_id
    # the refused first attempt was not performed, so sending it again is safe
    assert counts(simulator, "9001", "1101", "2501", "5304") == (2, 1, 2, 0)
    assert registrations_of(simulator, person) == 1


async def test_submit_when_nothing_can_be_sent_frees_the_key(
    simulator: RunningSimulator, population: Population, short_dir: Path
) -> None:
    person = population.examples().employee
    simulator.app.faults.set("1101", Fault(FaultKind.HTTP_5XX))
    async with sidecar_with(simulator, short_dir) as sidecar:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await submit(sidecar, submission(person))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert counts(simulator, "1101", "2501") == (3, 0)  # the query was retried, 2501 never
        simulator.app.faults.clear()
        assert (await submit(sidecar, submission(person))).registration.registration_id
    assert counts(simulator, "2501") == (1,)


async def made_registration(
    simulator: RunningSimulator, person: Person, sidecar: RunningSidecar, request_id: str = "made"
) -> str:
    answer = await submit(sidecar, submission(person, request_id))
    simulator.app.calls.reset()
    return answer.registration.registration_id


async def test_cancel_answer_lost_is_resolved_by_the_query_or_sent_again(
    simulator: RunningSimulator, population: Population, short_dir: Path
) -> None:
    person = population.examples().employee
    async with sidecar_with(simulator, short_dir) as sidecar:
        serial = await made_registration(simulator, person, sidecar)
        simulator.app.faults.set("2502", Fault(FaultKind.RESET, times=1))  # not performed
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await cancel(sidecar, person, serial)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert counts(simulator, "1101", "5304", "2502") == (1, 2, 1)
        # the repeat sees it still active and cancels (cancelling twice could do no harm)
        assert (await cancel(sidecar, person, serial)).registration.state == 4
        assert counts(simulator, "1101", "5304", "2502") == (2, 3, 2)

        serial = await made_registration(simulator, person, sidecar, "made-again")
        simulator.app.faults.set("2502", Fault(FaultKind.MALFORMED_JSON, times=1))  # performed
        assert (await cancel(sidecar, person, serial, "c2")).registration.state == 4
        assert counts(simulator, "1101", "5304", "2502") == (1, 2, 1)


@pytest.mark.slow
async def test_cancel_past_the_deadline_is_resolved_without_resending(
    simulator: RunningSimulator, population: Population, short_dir: Path
) -> None:
    person = population.examples().employee
    async with sidecar_with(simulator, short_dir) as sidecar:
        serial = await made_registration(simulator, person, sidecar)
        simulator.app.faults.set("2502", Fault(FaultKind.LATENCY, times=1, seconds=LATE))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await cancel(sidecar, person, serial, timeout=DEADLINE)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await asyncio.sleep(LATE)
        assert (await cancel(sidecar, person, serial)).registration.state == 4
        assert counts(simulator, "1101", "5304", "2502") == (2, 2, 1)


async def test_cancel_refused_is_final_and_expired_sign_in_is_renewed(
    simulator: RunningSimulator, population: Population, short_dir: Path
) -> None:
    person = population.examples().employee
    async with sidecar_with(simulator, short_dir) as sidecar:
        serial = await made_registration(simulator, person, sidecar)
        simulator.app.faults.set("2502", Fault(FaultKind.REFUSE, times=1, err_msg="已用于结算"))
        for _ in range(2):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await cancel(sidecar, person, serial)
            assert details(caught.value)[0].metadata["platform_message"] == "已用于结算"
        # one look before, one after the refusal (cancelled meanwhile?); the repeat is replayed
        assert counts(simulator, "1101", "5304", "2502") == (1, 2, 1)
        simulator.app.faults.set("2502", Fault(FaultKind.EXPIRED_SIGN_IN, times=1))
        assert (await cancel(sidecar, person, serial, "c2")).registration.state == 4
        assert counts(simulator, "2502") == (3,)

"""异地就医备案 end to end: submit (2501), list (5304), cancel (2502) against the simulator.

Store-backed behaviour (idempotency keys, submission times) runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
from pathlib import Path

import grpc
import pytest

from sidecar._proto.yibao.gateway.v1 import common_pb2 as common
from sidecar._proto.yibao.gateway.v1 import gateway_pb2 as gateway
from sidecar.config import StoreConfig
from tests.integration.functions_support import (
    TARGET,
    cancel,
    list_registrations,
    sidecar_with,
    submission,
    submit,
    today,
)
from tests.integration.test_gateway import details
from yibao_devkit.simulator.population import Population
from yibao_devkit.simulator.server import RunningSimulator

ACTIVE = gateway.OFFSITE_REGISTRATION_STATE_ACTIVE
CANCELLED = gateway.OFFSITE_REGISTRATION_STATE_CANCELLED


async def test_submit_list_cancel_and_cancel_again(
    simulator: RunningSimulator,
    population: Population,
    short_dir: Path,
    store_config: StoreConfig,
) -> None:
    person = population.examples().employee
    calls = simulator.app.calls
    async with sidecar_with(simulator, short_dir, store=store_config) as sidecar:
        made = (await submit(sidecar, submission(person))).registration
        assert made.state == ACTIVE
        assert made.registration_id
        assert made.target_division_code == TARGET
        assert made.reason == gateway.OFFSITE_REASON_RESIDENT_WORKING_ELSEWHERE
        assert made.insurance_type_code == "310"
        assert made.HasField("submit_time")
        assert calls.count("2501") == 1

        listed = await list_registrations(sidecar, person)
        assert [r.registration_id for r in listed.registrations] == [made.registration_id]
        shown = listed.registrations[0]
        assert shown.state == ACTIVE
        assert shown.submit_time == made.submit_time  # submitted through this sidecar
        assert (shown.start_date, shown.end_date) == (made.start_date, made.end_date)
        assert (shown.contact_phone, shown.address) == (made.contact_phone, made.address)
        assert shown.reason == made.reason

        gone = (await cancel(sidecar, person, made.registration_id)).registration
        assert gone.state == CANCELLED
        assert calls.count("2502") == 1
        again = (await cancel(sidecar, person, made.registration_id, "cancel-0002")).registration
        assert again.state == CANCELLED  # already cancelled: returned unchanged, not sent again
        assert calls.count("2502") == 1
        listed = await list_registrations(sidecar, person)
        assert [r.state for r in listed.registrations] == [CANCELLED]
    stored = simulator.app.state.registrations.get(made.registration_id)
    assert stored is not None and not stored.active


async def test_a_repeat_returns_the_first_outcome_and_another_payload_is_refused(
    simulator: RunningSimulator,
    population: Population,
    short_dir: Path,
    store_config: StoreConfig,
) -> None:
    person = population.examples().employee
    async with sidecar_with(simulator, short_dir, store=store_config) as sidecar:
        first = await submit(sidecar, submission(person))
        repeat = await submit(sidecar, submission(person))
        assert repeat == first
        assert simulator.app.calls.count("2501") == 1
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await submit(sidecar, submission(person, contact_phone="13900000000"))
        assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert details(caught.value)[0].reason == "IDEMPOTENCY_KEY_REUSED"
        # the key is per method: the same id may name a cancellation
        await cancel(sidecar, person, first.registration.registration_id, request_id="reg-0001")
    assert simulator.app.calls.count("2501") == 1


async def test_the_same_key_survives_a_restart(
    simulator: RunningSimulator,
    population: Population,
    short_dir: Path,
    store_config: StoreConfig,
) -> None:
    person = population.examples().employee
    async with sidecar_with(simulator, short_dir, store=store_config) as sidecar:
        first = await submit(sidecar, submission(person))
    async with sidecar_with(simulator, short_dir, store=store_config) as sidecar:
        assert await submit(sidecar, submission(person)) == first
    assert simulator.app.calls.count("2501") == 1


async def test_concurrent_duplicates_submit_once(
    simulator: RunningSimulator,
    population: Population,
    short_dir: Path,
    store_config: StoreConfig,
) -> None:
    person = population.examples().employee
    async with sidecar_with(simulator, short_dir, store=store_config) as sidecar:
        results = await asyncio.gather(
            *(submit(sidecar, submission(person)) for _ in range(12)), return_exceptions=True
        )
        answers = [r for r in results if isinstance(r, gateway.SubmitOffsiteRegistrationResponse)]
        refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert answers and len(answers) + len(refused) == 12
        assert all(a == answers[0] for a in answers)
        for error in refused:
            assert error.code() == grpc.StatusCode.ABORTED
            assert details(error)[0].reason == "REQUEST_IN_PROGRESS"
        assert await submit(sidecar, submission(person)) == answers[0]
        serial = answers[0].registration.registration_id
        cancels = await asyncio.gather(
            *(cancel(sidecar, person, serial) for _ in range(8)), return_exceptions=True
        )
        done = [c for c in cancels if isinstance(c, gateway.CancelOffsiteRegistrationResponse)]
        assert done and all(c.registration.state == CANCELLED for c in done)
        assert all(
            details(c)[0].reason == "REQUEST_IN_PROGRESS"
            for c in cancels
            if isinstance(c, grpc.aio.AioRpcError)
        )
    assert simulator.app.calls.count("2501") == 1
    assert simulator.app.calls.count("2502") == 1
    assert len(simulator.app.state.registrations.of(person.psn_no or "")) == 1


async def test_a_refusal_is_the_outcome_and_is_replayed(
    simulator: RunningSimulator, population: Population, short_dir: Path
) -> None:
    person = population.examples().employee
    async with sidecar_with(simulator, short_dir) as sidecar:
        await submit(sidecar, submission(person, "first"))
        overlapping = submission(person, "second", target_division_code="110105")
        for _ in range(2):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await submit(sidecar, overlapping)
            assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            info = details(caught.value)[0]
            assert info.reason == "PLATFORM_REFUSED"
            assert info.metadata["platform_code"] == "-1"
            assert "已存在有效的异地就医备案" in info.metadata["platform_message"]
    assert simulator.app.calls.count("2501") == 2  # the repeat was not sent


async def test_every_bad_field_is_named_before_anything_is_sent_and_the_key_stays_free(
    simulator: RunningSimulator, population: Population, short_dir: Path
) -> None:
    person = population.examples().employee
    bad = submission(
        person,
        request_id="no spaces allowed",
        insurance_type=common.INSURANCE_TYPE_UNSPECIFIED,
        target_division_code="990000",
        start_date=(today() - dt.timedelta(days=3)).isoformat(),
        end_date="2026-13-01",
        reason=gateway.OFFSITE_REASON_REFERRAL,
        contact_phone="call me",
        address="",
    )
    async with sidecar_with(simulator, short_dir) as sidecar:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await submit(sidecar, bad)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [field for field, _ in details(caught.value)[1]] == [
            "request_id", "insurance_type", "target_division_code", "start_date", "end_date",
            "contact_phone", "address", "hospital", "diagnosis",
        ]  # fmt: skip
        reversed_dates = submission(
            person, start_date=(today() + dt.timedelta(days=5)).isoformat(),
            end_date=today().isoformat(),
        )  # fmt: skip
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await submit(sidecar, reversed_dates)
        assert details(caught.value)[1] == [("end_date", "must not be before start_date")]
        no_end = submission(person, end_date="", reason=gateway.OFFSITE_REASON_TEMPORARY_TRAVEL)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await submit(sidecar, no_end)
        assert details(caught.value)[1] == [("end_date", "is required for this reason")]
        assert simulator.app.calls.total == 0
        # the insured area itself is found only after 1101, still before 2501
        home = person.insuinfo[0].insuplc_admdvs
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await submit(sidecar, submission(person, target_division_code=home))
        assert details(caught.value)[1] == [
            ("target_division_code", "must differ from the insured area")
        ]
        assert simulator.app.calls.count("2501") == 0
        # none of these used the key up
        assert (await submit(sidecar, submission(person))).registration.state == ACTIVE


async def test_a_past_start_within_the_configured_policy_is_accepted(
    simulator: RunningSimulator, population: Population, short_dir: Path
) -> None:
    person = population.examples().employee
    start = (today() - dt.timedelta(days=7)).isoformat()
    async with sidecar_with(simulator, short_dir, offsite={"max_backdate_days": 10}) as sidecar:
        made = (await submit(sidecar, submission(person, start_date=start))).registration
        assert made.start_date == start
        old = (today() - dt.timedelta(days=11)).isoformat()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await submit(sidecar, submission(person, "older", start_date=old))
        assert details(caught.value)[1] == [
            ("start_date", "must not be more than 10 days in the past")
        ]


async def test_a_referral_carries_hospital_and_diagnosis(
    simulator: RunningSimulator, population: Population, short_dir: Path
) -> None:
    person = population.examples().employee
    request = submission(
        person,
        reason=gateway.OFFSITE_REASON_REFERRAL,
        hospital=common.MedicalInstitution(code="H31011500001", name="某某医院"),
        diagnosis=common.Diagnosis(code="J06.900", name="急性上呼吸道感染"),
    )
    async with sidecar_with(simulator, short_dir) as sidecar:
        made = (await submit(sidecar, request)).registration
        listed = (await list_registrations(sidecar, person)).registrations[0]
    assert listed.hospital.code == made.hospital.code == "H31011500001"
    assert listed.diagnosis.name == "急性上呼吸道感染"
    assert listed.reason == gateway.OFFSITE_REASON_REFERRAL


async def test_unknown_people_and_registrations_are_not_found(
    simulator: RunningSimulator, population: Population, short_dir: Path
) -> None:
    examples = population.examples()
    async with sidecar_with(simulator, short_dir) as sidecar:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await submit(sidecar, submission(examples.unknown))
        assert details(caught.value)[0].reason == "PERSON_NOT_FOUND"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await cancel(sidecar, examples.employee, "NO-SUCH-SERIAL")
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert details(caught.value)[0].reason == "REGISTRATION_NOT_FOUND"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await list_registrations(sidecar, examples.unknown)
        assert details(caught.value)[0].reason == "PERSON_NOT_FOUND"
    assert simulator.app.calls.count("2501") == simulator.app.calls.count("2502") == 0


@pytest.mark.slow
async def test_listing_pages_newest_first_with_filters_and_bound_tokens(
    simulator: RunningSimulator, population: Population, short_dir: Path
) -> None:
    person = population.examples().employee
    other = population.people[4]
    start = today()
    async with sidecar_with(simulator, short_dir) as sidecar:
        made = []
        for index in range(3):  # consecutive, non-overlapping periods
            begin = start + dt.timedelta(days=30 * index)
            request = submission(
                person,
                f"reg-{index}",
                start_date=begin.isoformat(),
                end_date=(begin + dt.timedelta(days=29)).isoformat(),
            )
            made.append((await submit(sidecar, request)).registration.registration_id)
            await asyncio.sleep(1.05)  # crte_time has whole seconds
        await cancel(sidecar, person, made[0])
        first = await list_registrations(sidecar, person, page_size=2)
        assert [r.registration_id for r in first.registrations] == [made[2], made[1]]
        assert first.next_page_token
        second = await list_registrations(
            sidecar, person, page_size=2, page_token=first.next_page_token
        )
        assert [r.registration_id for r in second.registrations] == [made[0]]
        assert second.next_page_token == ""
        active = await list_registrations(sidecar, person, states=[ACTIVE])
        assert [r.registration_id for r in active.registrations] == [made[2], made[1]]
        for bad in (
            {"page_token": first.next_page_token, "states": [ACTIVE]},  # another filter
            {"page_token": first.next_page_token[:-2] + "AA"},  # tampered
            {"page_token": "not-a-token"},
            {"page_size": -1},
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await list_registrations(sidecar, person, **bad)  # type: ignore[arg-type]
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as caught:  # another person's token
            await list_registrations(sidecar, other, page_token=first.next_page_token)
        assert details(caught.value)[1][0][0] == "page_token"


async def test_registrations_made_elsewhere_have_no_submit_time(
    simulator: RunningSimulator, population: Population, short_dir: Path
) -> None:
    person = population.examples().employee
    async with sidecar_with(simulator, short_dir) as one:
        await submit(one, submission(person))
    (short_dir / "other").mkdir()
    other = {"slots": 2, "slot": 1}  # another replica: its own msgid space
    async with sidecar_with(simulator, short_dir / "other", msgid=other) as elsewhere:
        listed = (await list_registrations(elsewhere, person)).registrations
    assert len(listed) == 1 and not listed[0].HasField("submit_time")


async def test_a_store_that_cannot_be_reached_is_unavailable_before_anything_is_sent(
    simulator: RunningSimulator, population: Population, short_dir: Path
) -> None:
    person = population.examples().employee
    async with sidecar_with(simulator, short_dir) as sidecar:
        await sidecar.sidecar.store.close()
        shutil.rmtree(short_dir / "store")
        (short_dir / "store").write_text("")  # the database cannot be opened again
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await submit(sidecar, submission(person))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert details(caught.value)[0].reason == "STORE_UNAVAILABLE"
    assert simulator.app.calls.total == 0


async def test_a_regional_registration_code_is_configuration(
    short_dir: Path,
) -> None:
    from yibao_devkit.simulator.app import PlatformSimulator
    from yibao_devkit.simulator.server import running_simulator
    from yibao_devkit.simulator.transactions import default_registry

    app = PlatformSimulator(
        Population.generate(42, 10), transactions=default_registry({"2501A": "2501"})
    )
    person = app.population.examples().employee
    async with (
        running_simulator(app) as simulator,
        sidecar_with(simulator, short_dir, transactions={"registration": "2501A"}) as sidecar,
    ):
        assert (await submit(sidecar, submission(person))).registration.registration_id
    assert (app.calls.count("2501A"), app.calls.count("2501")) == (1, 0)

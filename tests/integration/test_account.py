"""GetAccount (医保个人账户): 1101 balances, 5206 figures, the statement newest first in pages."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import grpc
import pytest

from sidecar._proto.yibao.gateway.v1 import common_pb2 as common
from sidecar._proto.yibao.gateway.v1 import gateway_pb2 as gateway
from tests.conftest import write_secret
from tests.integration.conftest import RunningSidecar
from tests.integration.functions_support import get_account, sidecar_with, today
from tests.integration.test_gateway import details
from yibao_devkit.simulator.accounts import MovementKind
from yibao_devkit.simulator.faults import Fault, FaultKind
from yibao_devkit.simulator.population import Person, Population
from yibao_devkit.simulator.server import RunningSimulator
from yibao_devkit.simulator.times import BEIJING


def book(simulator: RunningSimulator, person: Person, count: int, start: int = 0) -> list[int]:
    """``count`` statement entries (debits of 1.00, 1.01, ... yuan), oldest first, in fen.

    The statement reports the platform's account movements (settlements, cancellations and
    reversals); booking them directly keeps these tests about paging, not settling.
    """
    accounts = simulator.app.state.accounts
    # On today's Beijing date whatever the hour (two hours back crossed midnight before 02:00)
    base = dt.datetime.combine(today(), dt.time(0, 0), tzinfo=BEIJING)
    amounts = []
    for index in range(start, start + count):
        amount = -(100 + index)
        accounts.move(
            person.psn_no or "",
            amount,
            at=base + dt.timedelta(seconds=index),
            kind=MovementKind.SETTLEMENT,
            setl_id=f"S{index:08d}",
        )
        amounts.append(amount)
    return amounts


async def pages(
    sidecar: RunningSidecar, person: Person, size: int, **fields: object
) -> tuple[list[gateway.StatementEntry], int]:
    entries: list[gateway.StatementEntry] = []
    token, count = "", 0
    while True:
        answer = await get_account(sidecar, person, page_size=size, page_token=token, **fields)
        entries.extend(answer.statement_entries)
        count += 1
        token = answer.next_page_token
        if not token:
            return entries, count


async def test_balances_figures_and_an_empty_statement(
    simulator: RunningSimulator, population: Population, short_dir: Path
) -> None:
    person = population.examples().employee
    async with sidecar_with(simulator, short_dir) as sidecar:
        answer = await get_account(sidecar, person)
    account = simulator.app.state.accounts.balance(person.psn_no or "")
    # every enrolment as 1101 reports it; only employee basic insurance has a personal account
    assert [(b.insurance_type_code, b.balance_fen) for b in answer.balances] == [
        (row.insutype, account if row.insutype == "310" else row.balc) for row in person.insuinfo
    ]
    assert answer.balances[0].insurance_type == common.INSURANCE_TYPE_EMPLOYEE_BASIC
    year, month = today().year, today().month
    expected = simulator.app.state.cumulative.through(person.psn_no or "", year, month)
    assert [(f.insurance_type_code, f.year, f.category_code, f.amount_fen)
            for f in answer.cumulative_figures] == [
        (row.insutype, row.year, row.cum_type_code, row.cum) for row in expected
    ]  # fmt: skip
    assert all(f.category_name for f in answer.cumulative_figures)
    assert answer.statement_available
    assert list(answer.statement_entries) == [] and answer.next_page_token == ""
    assert [simulator.app.calls.count(i) for i in ("1101", "5206", "5307")] == [1, 1, 1]


async def test_the_statement_pages_newest_first_and_stays_stable_while_entries_arrive(
    simulator: RunningSimulator, population: Population, short_dir: Path
) -> None:
    person = population.examples().employee
    booked = book(simulator, person, 45)
    async with sidecar_with(simulator, short_dir) as sidecar:
        first = await get_account(sidecar, person, page_size=20)
        assert [e.amount_fen for e in first.statement_entries] == booked[::-1][:20]
        newest = first.statement_entries[0]
        assert newest.kind == gateway.STATEMENT_ENTRY_KIND_SETTLEMENT_PAYMENT
        assert newest.kind_code == "01" and newest.settlement_id == "S00000044"
        assert newest.balance_after_fen == simulator.app.state.accounts.balance(person.psn_no or "")
        assert newest.entry_date == today().isoformat()
        assert newest.insurance_type == common.INSURANCE_TYPE_EMPLOYEE_BASIC
        late = book(simulator, person, 3, start=45)  # booked between pages
        token, rest = first.next_page_token, []
        while token:
            page = await get_account(sidecar, person, page_size=20, page_token=token)
            rest.extend(e.amount_fen for e in page.statement_entries)
            token = page.next_page_token
        assert rest == booked[::-1][20:]  # no repeats, no gaps, none of the late ones
        again, count = await pages(sidecar, person, 20)
        assert [e.amount_fen for e in again] == (booked + late)[::-1]
        assert count == 3
        # a different page size on the way is fine (AIP-158); entries are still in order
        second = await get_account(sidecar, person, page_size=7)
        third = await get_account(sidecar, person, page_size=30, page_token=second.next_page_token)
        amounts = [e.amount_fen for e in [*second.statement_entries, *third.statement_entries]]
        assert amounts == (booked + late)[::-1][:37]


async def test_a_statement_longer_than_one_platform_page(
    simulator: RunningSimulator, population: Population, short_dir: Path
) -> None:
    person = population.examples().employee
    booked = book(simulator, person, 230)
    async with sidecar_with(simulator, short_dir) as sidecar:
        entries, count = await pages(sidecar, person, 100)
    assert [e.amount_fen for e in entries] == booked[::-1]
    assert count == 3


async def test_the_period_filter_and_insurance_type(
    simulator: RunningSimulator, population: Population, short_dir: Path
) -> None:
    person = population.examples().employee
    book(simulator, person, 5)
    yesterday = (today() - dt.timedelta(days=1)).isoformat()
    async with sidecar_with(simulator, short_dir) as sidecar:
        old = await get_account(sidecar, person, statement_end_date=yesterday)
        assert list(old.statement_entries) == []
        resident = await get_account(
            sidecar, person, insurance_type=common.INSURANCE_TYPE_RESIDENT_BASIC
        )
        assert list(resident.balances) == list(resident.statement_entries) == []
        last_year = await get_account(sidecar, person, cumulative_year=today().year - 1)
        assert {f.year for f in last_year.cumulative_figures} == {today().year - 1}
    assert simulator.app.calls.count("5307") == 2  # no statement asked for the resident filter


async def test_a_region_without_a_statement(
    simulator: RunningSimulator, population: Population, short_dir: Path
) -> None:
    person = population.examples().employee
    book(simulator, person, 2)
    async with sidecar_with(
        simulator, short_dir, transactions={"account_statement": ""}
    ) as sidecar:
        answer = await get_account(sidecar, person)
    assert not answer.statement_available and list(answer.statement_entries) == []
    assert answer.balances
    assert simulator.app.calls.count("5307") == 0


async def test_page_tokens_are_bound_to_the_query_subject_and_tenant(
    simulator: RunningSimulator, population: Population, short_dir: Path
) -> None:
    person, other = population.examples().employee, population.people[4]
    book(simulator, person, 30)
    async with sidecar_with(simulator, short_dir) as sidecar:
        token = (await get_account(sidecar, person, page_size=10)).next_page_token
        assert token
        for who, fields in (
            (other, {}),
            (person, {"statement_start_date": "2026-01-02"}),
            (person, {"cumulative_year": today().year - 1}),
            (person, {"insurance_type": common.INSURANCE_TYPE_EMPLOYEE_BASIC}),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await get_account(sidecar, who, page_token=token, **fields)  # type: ignore[arg-type]
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert details(caught.value)[1][0][0] == "page_token"
        flipped = token[:5] + ("A" if token[5] != "A" else "B") + token[6:]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await get_account(sidecar, person, page_token=flipped)
        assert details(caught.value)[1][0][0] == "page_token"
        answer = await get_account(sidecar, person, page_token=token)
        assert len(answer.statement_entries) == 20


async def test_every_bad_field_is_named_before_anything_is_sent(
    simulator: RunningSimulator, population: Population, short_dir: Path
) -> None:
    person = population.examples().employee
    async with sidecar_with(simulator, short_dir) as sidecar:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await get_account(
                sidecar,
                person,
                insurance_type=77,
                cumulative_year=today().year + 1,
                statement_start_date="2026-02-30",
                statement_end_date="yesterday",
                page_size=-1,
                page_token="%%%",
            )
        assert [f for f, _ in details(caught.value)[1]] == [
            "insurance_type", "cumulative_year", "statement_start_date",
            "statement_end_date", "page_size", "page_token",
        ]  # fmt: skip
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await get_account(
                sidecar, person, statement_start_date="2026-03-01",
                statement_end_date="2026-02-28",
            )  # fmt: skip
        assert details(caught.value)[1] == [
            ("statement_end_date", "must not be before statement_start_date")
        ]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await get_account(sidecar, population.examples().unknown)
        assert details(caught.value)[0].reason == "PERSON_NOT_FOUND"
    assert simulator.app.calls.count("5206") == 0


# (fault on 5206, RPC status, reason, 5206 calls): queries retry three times within the deadline
MATRIX = [
    (Fault(FaultKind.HTTP_5XX), grpc.StatusCode.UNAVAILABLE, "PLATFORM_UNAVAILABLE", 3),
    (Fault(FaultKind.RESET), grpc.StatusCode.UNAVAILABLE, "PLATFORM_UNAVAILABLE", 3),
    (Fault(FaultKind.MALFORMED_JSON), grpc.StatusCode.UNAVAILABLE, "PLATFORM_UNAVAILABLE", 3),
    (Fault(FaultKind.REFUSE, err_msg="系统繁忙"), grpc.StatusCode.FAILED_PRECONDITION,
     "PLATFORM_REFUSED", 1),
    (Fault(FaultKind.EXPIRED_SIGN_IN, times=1), grpc.StatusCode.OK, "", 2),
    (Fault(FaultKind.HTTP_5XX, times=2), grpc.StatusCode.OK, "", 3),
]  # fmt: skip


@pytest.mark.parametrize(("fault", "status", "reason", "calls"), MATRIX)
async def test_fault_matrix(
    simulator: RunningSimulator,
    population: Population,
    short_dir: Path,
    fault: Fault,
    status: grpc.StatusCode,
    reason: str,
    calls: int,
) -> None:
    person = population.examples().employee
    simulator.app.faults.set("5206", fault)
    async with sidecar_with(simulator, short_dir) as sidecar:
        if status == grpc.StatusCode.OK:
            assert (await get_account(sidecar, person)).cumulative_figures
        else:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await get_account(sidecar, person)
            assert caught.value.code() == status
            assert details(caught.value)[0].reason == reason
    assert simulator.app.calls.count("5206") == calls
    assert simulator.app.calls.count("5307") == (1 if status == grpc.StatusCode.OK else 0)


async def test_latency_beyond_the_deadline(
    simulator: RunningSimulator, population: Population, short_dir: Path
) -> None:
    person = population.examples().employee
    simulator.app.faults.set("5307", Fault(FaultKind.LATENCY, seconds=3))
    async with sidecar_with(simulator, short_dir) as sidecar:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await get_account(sidecar, person, timeout=1.0)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert [simulator.app.calls.count(i) for i in ("1101", "5206", "5307")] == [1, 1, 1]


def slot(number: int) -> dict[str, object]:
    return {"slots": 3, "slot": number}


async def test_a_configured_token_key_keeps_tokens_valid_across_restarts(
    simulator: RunningSimulator, population: Population, short_dir: Path, tmp_path: Path
) -> None:
    person = population.examples().employee
    book(simulator, person, 12)
    key = write_secret(tmp_path / "paging.key", "ab" * 32)
    paging = {"token_key_file": str(key)}
    # (msgid slots only because the restarts fall within one second: msgids must not repeat)
    async with sidecar_with(simulator, short_dir, paging=paging, msgid=slot(0)) as sidecar:
        token = (await get_account(sidecar, person, page_size=10)).next_page_token
    async with sidecar_with(simulator, short_dir, paging=paging, msgid=slot(1)) as sidecar:
        rest = await get_account(sidecar, person, page_size=10, page_token=token)
    assert len(rest.statement_entries) == 2
    async with sidecar_with(simulator, short_dir, msgid=slot(2)) as sidecar:  # a random key
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await get_account(sidecar, person, page_size=10, page_token=token)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT

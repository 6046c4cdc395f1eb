"""电子凭证结算 end to end against the simulator over mTLS, on both store back ends.

Every test audits the simulator's ledger: each charge belongs to a 2207 msgid the sidecar
recorded, and net of cancellations and reversals no request_id has more than one charge.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from sidecar._proto.yibao.gateway.v1 import gateway_pb2 as gateway
from sidecar._proto.yibao.gateway.v1 import gateway_pb2_grpc as gateway_grpc
from sidecar.config import PlatformConfig, StoreConfig
from tests.integration.conftest import TENANT_METADATA, RunningSidecar
from tests.integration.consent_support import consent_to
from tests.integration.settlement_support import (
    TOTAL_FEN,
    assert_at_most_one_charge_per_request,
    charges_by_settlement,
    consenting_sidecar,
    recorded_msgids,
    settle_request,
    settlement_settings,
)
from tests.integration.test_gateway import details, subject_of
from yibao_devkit.simulator.faults import Fault, FaultKind
from yibao_devkit.simulator.population import Person
from yibao_devkit.simulator.server import RunningSimulator

SETTLED = gateway.SETTLEMENT_STATE_SETTLED
PENDING = gateway.SETTLEMENT_STATE_PENDING
REVERSED = gateway.SETTLEMENT_STATE_REVERSED
CANCELLED = gateway.SETTLEMENT_STATE_CANCELLED


@pytest.fixture
async def settling(
    simulator: RunningSimulator, short_dir: Path, store_config: StoreConfig
) -> AsyncIterator[RunningSidecar]:
    settings = settlement_settings(simulator, short_dir, store_config)
    async with consenting_sidecar(settings, simulator.app) as running:
        yield running


@pytest.fixture
def employee(simulator: RunningSimulator) -> Person:
    return simulator.app.population.examples().employee


def stub_of(running: RunningSidecar) -> gateway_grpc.InsuranceGatewayAsyncStub:
    return gateway_grpc.InsuranceGatewayStub(running.channel)


async def settle(
    running: RunningSidecar, request: gateway.SettleWithEVoucherRequest, timeout: float = 20
) -> gateway.Settlement:
    answer = await stub_of(running).SettleWithEVoucher(
        request, metadata=TENANT_METADATA, timeout=timeout
    )
    return answer.settlement


async def audit(simulator: RunningSimulator, store_config: StoreConfig) -> None:
    assert_at_most_one_charge_per_request(simulator.app, await recorded_msgids(store_config))


async def test_a_settlement_pays_in_exact_fen_and_a_repeat_charges_nothing(
    settling: RunningSidecar,
    simulator: RunningSimulator,
    employee: Person,
    store_config: StoreConfig,
) -> None:
    app = simulator.app
    balance_before = app.state.accounts.balance(employee.psn_no or "")
    request = settle_request(employee, app.issue_ec_token(employee.certno), "settle-1")
    first = await settle(settling, request)
    assert first.state == SETTLED
    assert first.request_id == "settle-1" and first.settlement_id
    assert first.total_fen == TOTAL_FEN
    parts = first.fund_paid_fen + first.account_paid_fen + first.cash_paid_fen
    assert parts + first.other_paid_fen == TOTAL_FEN
    charge = app.ledger.charges(psn_no=employee.psn_no)[0]
    assert (first.fund_paid_fen, first.account_paid_fen, first.cash_paid_fen) == (
        charge.fund_pay_sumamt,
        charge.acct_pay,
        charge.psn_cash_pay,
    )
    assert first.account_balance_after_fen == balance_before - charge.acct_pay
    assert first.HasField("settle_time") and not first.HasField("cancel_time")
    assert [app.calls.count(n) for n in ("1101", "2201", "2204", "2206", "2207")] == [1] * 5

    again = await settle(settling, request)
    assert again == first
    assert app.calls.count("2207") == 1
    assert charges_by_settlement(app, employee.psn_no or "") == (1, 1)

    stub = stub_of(settling)
    by_request = await stub.GetSettlement(
        gateway.GetSettlementRequest(subject=subject_of(employee), original_request_id="settle-1"),
        metadata=TENANT_METADATA,
    )
    by_id = await stub.GetSettlement(
        gateway.GetSettlementRequest(
            subject=subject_of(employee), settlement_id=first.settlement_id
        ),
        metadata=TENANT_METADATA,
    )
    assert by_request.settlement == by_id.settlement == first
    await audit(simulator, store_config)


async def test_the_same_key_with_another_payload_is_refused_and_charges_nothing(
    settling: RunningSidecar, simulator: RunningSimulator, employee: Person
) -> None:
    token = simulator.app.issue_ec_token(employee.certno)
    await settle(settling, settle_request(employee, token, "key-1"))
    changed = settle_request(employee, token, "key-1", use_personal_account=False)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await settle(settling, changed)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert details(caught.value)[0].reason == "IDEMPOTENCY_KEY_REUSED"
    assert simulator.app.calls.count("2207") == 1


async def test_twenty_concurrent_duplicates_settle_once(
    settling: RunningSidecar,
    simulator: RunningSimulator,
    employee: Person,
    store_config: StoreConfig,
) -> None:
    request = settle_request(employee, simulator.app.issue_ec_token(employee.certno), "dup-20")
    answers = await asyncio.gather(*(settle(settling, request) for _ in range(20)))
    assert {a.state for a in answers} == {SETTLED}
    assert len({a.settlement_id for a in answers}) == 1
    assert simulator.app.calls.count("2201") == 1
    assert simulator.app.calls.count("2207") == 1
    assert charges_by_settlement(simulator.app, employee.psn_no or "") == (1, 1)
    await audit(simulator, store_config)


async def test_cancel_a_settlement_then_repeat_the_cancel(
    settling: RunningSidecar,
    simulator: RunningSimulator,
    employee: Person,
    store_config: StoreConfig,
) -> None:
    app = simulator.app
    balance_before = app.state.accounts.balance(employee.psn_no or "")
    request = settle_request(employee, app.issue_ec_token(employee.certno), "to-cancel")
    made = await settle(settling, request)
    cancel = gateway.CancelSettlementRequest(
        request_id="cancel-1", subject=subject_of(employee), settlement_id=made.settlement_id
    )
    stub = stub_of(settling)
    first = (await stub.CancelSettlement(cancel, metadata=TENANT_METADATA)).settlement
    assert first.state == CANCELLED and first.HasField("cancel_time")
    assert first.total_fen == made.total_fen and first.fund_paid_fen == made.fund_paid_fen
    assert app.state.accounts.balance(employee.psn_no or "") == balance_before
    again = (await stub.CancelSettlement(cancel, metadata=TENANT_METADATA)).settlement
    assert again == first
    assert app.calls.count("2208") == 1
    other_key = gateway.CancelSettlementRequest(
        request_id="cancel-2", subject=subject_of(employee), original_request_id="to-cancel"
    )
    assert (await stub.CancelSettlement(other_key, metadata=TENANT_METADATA)).settlement == first
    assert app.calls.count("2208") == 1
    settled_again = await settle(settling, request)
    assert settled_again.state == CANCELLED  # a repeat of the settlement: no second charge
    assert charges_by_settlement(app, employee.psn_no or "") == (1, 0)
    await audit(simulator, store_config)


async def test_another_subject_sees_no_settlement(
    settling: RunningSidecar, simulator: RunningSimulator, employee: Person
) -> None:
    made = await settle(
        settling,
        settle_request(employee, simulator.app.issue_ec_token(employee.certno), "mine"),
    )
    other = simulator.app.population.examples().resident
    stub = stub_of(settling)
    for request in (
        gateway.GetSettlementRequest(subject=subject_of(other), original_request_id="mine"),
        gateway.GetSettlementRequest(subject=subject_of(other), settlement_id=made.settlement_id),
        gateway.GetSettlementRequest(subject=subject_of(employee), original_request_id="nope"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetSettlement(request, metadata=TENANT_METADATA)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert details(caught.value)[0].reason == "SETTLEMENT_NOT_FOUND"
    other_tenant = (("x-yibao-tenant", "other-corp"), ("x-yibao-operator", "im-bot-01"))
    await consent_to(settling.channel, [subject_of(employee)], metadata=other_tenant)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetSettlement(
            gateway.GetSettlementRequest(subject=subject_of(employee), original_request_id="mine"),
            metadata=other_tenant,
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


# The fault matrix: each of the simulator's switches on 2207, once. The call's deadline is 3 s and
# the sidecar keeps 1 s of it to resolve; a request may still land 2.5 s after it was sent
# (latency), so "not found" from 2601 counts as final only 3 s after sending (late_arrival).
MATRIX_SETTINGS = {"resolve_reserve_seconds": 1.0, "late_arrival_seconds": 3.0}
CALL_TIMEOUT = 3.0
OK = grpc.StatusCode.OK


@pytest.mark.parametrize(
    ("fault", "status", "reason", "final", "sent_2207", "charges"),
    [
        # performed late: the call times out, the late charge is found and reversed afterwards
        (Fault(FaultKind.LATENCY, times=1, seconds=2.5), grpc.StatusCode.DEADLINE_EXCEEDED,
         "PLATFORM_TIMEOUT", REVERSED, 1, (1, 0)),
        # never performed: pending until no late arrival is possible, then reversed (nothing)
        (Fault(FaultKind.TIMEOUT, times=1, seconds=10), grpc.StatusCode.DEADLINE_EXCEEDED,
         "PLATFORM_TIMEOUT", REVERSED, 1, (0, 0)),
        (Fault(FaultKind.HTTP_5XX, times=1), grpc.StatusCode.UNAVAILABLE,
         "PLATFORM_UNAVAILABLE", REVERSED, 1, (0, 0)),
        (Fault(FaultKind.RESET, times=1), grpc.StatusCode.UNAVAILABLE,
         "PLATFORM_UNAVAILABLE", REVERSED, 1, (0, 0)),
        # performed, answer unusable or lost: reversed before the call answers
        (Fault(FaultKind.MALFORMED_JSON, times=1), OK, "", REVERSED, 1, (1, 0)),
        (Fault(FaultKind.COMMIT_THEN_DROP, times=1), OK, "", REVERSED, 1, (1, 0)),
        # a refusal is a definite answer: nothing charged, the key keeps the refusal
        (Fault(FaultKind.REFUSE, times=1), grpc.StatusCode.FAILED_PRECONDITION,
         "PLATFORM_REFUSED", gateway.SETTLEMENT_STATE_FAILED, 1, (0, 0)),
        # sign in again and resend under a new msgid (both recorded): settled once
        (Fault(FaultKind.EXPIRED_SIGN_IN, times=1), OK, "", SETTLED, 2, (1, 1)),
    ],
    ids=lambda value: value.kind.value if isinstance(value, Fault) else None,
)  # fmt: skip
@pytest.mark.slow
async def test_fault_matrix_on_2207(
    simulator: RunningSimulator,
    short_dir: Path,
    store_config: StoreConfig,
    employee: Person,
    fault: Fault,
    status: grpc.StatusCode,
    reason: str,
    final: int,
    sent_2207: int,
    charges: tuple[int, int],
) -> None:
    app = simulator.app
    settings = settlement_settings(simulator, short_dir, store_config, **MATRIX_SETTINGS)
    async with consenting_sidecar(settings, simulator.app) as running:
        request = settle_request(employee, app.issue_ec_token(employee.certno), "matrix")
        app.faults.set("2207", fault)
        code, got_reason, first = await outcome(running, request)
        assert (code, got_reason) == (status, reason)
        if first is not None:
            assert first.state == final
        assert app.calls.count("2207") == sent_2207
        assert [app.calls.count(n) for n in ("1101", "2201", "2204", "2206")] == [1] * 4

        resolved = await wait_resolved(running, employee, "matrix")
        assert resolved.state == final
        if final == gateway.SETTLEMENT_STATE_FAILED:
            assert resolved.failure_message
            with pytest.raises(grpc.aio.AioRpcError) as repeated:
                await settle(running, request)
            assert details(repeated.value)[0].reason == "PLATFORM_REFUSED"
        else:
            assert (await settle(running, request)).state == final
        assert app.calls.count("2207") == sent_2207  # nothing was sent again
        if final == REVERSED:
            assert app.calls.count("2601") >= 1
        assert charges_by_settlement(app, employee.psn_no or "") == charges
    await audit(simulator, store_config)


async def outcome(
    running: RunningSidecar, request: gateway.SettleWithEVoucherRequest
) -> tuple[grpc.StatusCode, str, gateway.Settlement | None]:
    """The call's status, ErrorInfo reason and settlement (if it answered one)."""
    try:
        answer = await settle(running, request, timeout=CALL_TIMEOUT)
    except grpc.aio.AioRpcError as error:
        return error.code(), details(error)[0].reason, None
    return OK, "", answer


async def wait_resolved(
    running: RunningSidecar, person: Person, request_id: str
) -> gateway.Settlement:
    """Poll GetSettlement until the settlement is no longer PENDING (the resolver's work)."""
    stub = stub_of(running)
    request = gateway.GetSettlementRequest(
        subject=subject_of(person), original_request_id=request_id
    )
    for _ in range(300):
        answer = await stub.GetSettlement(request, metadata=TENANT_METADATA)
        if answer.settlement.state != PENDING:
            return answer.settlement
        await asyncio.sleep(0.05)
    pytest.fail("the settlement stayed PENDING for 15 s")


async def test_a_region_with_second_confirmation_gets_the_code_forwarded(
    simulator: RunningSimulator, short_dir: Path, store_config: StoreConfig, employee: Person
) -> None:
    app = simulator.app
    app.confirmation.require("sms_code", per_person=True)
    settings = settlement_settings(
        simulator, short_dir, store_config, second_confirmation={app.division[:4]: "sms_code"}
    )
    async with consenting_sidecar(settings, simulator.app) as running:
        token = app.issue_ec_token(employee.certno)
        code, reason, _ = await outcome(running, settle_request(employee, token, "no-code"))
        assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "PLATFORM_REFUSED")
        wrong = settle_request(employee, token, "wrong-code", sms_code="000000")
        expected = app.confirmation.expected(employee.psn_no or "")
        if expected == "000000":
            wrong.sms_code = "111111"
        code, reason, _ = await outcome(running, wrong)
        assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "PLATFORM_REFUSED")
        other_kind = settle_request(employee, token, "token-kind", dynamic_token=expected)
        code, reason, _ = await outcome(running, other_kind)
        assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")
        assert app.calls.count("2207") == 2
        settled = await settle(running, settle_request(employee, token, "right", sms_code=expected))
        assert settled.state == SETTLED
        assert charges_by_settlement(app, employee.psn_no or "") == (1, 1)
    await audit(simulator, store_config)


async def test_a_region_without_second_confirmation_does_not_forward_a_code(
    settling: RunningSidecar, simulator: RunningSimulator, employee: Person
) -> None:
    token = simulator.app.issue_ec_token(employee.certno)
    answer = await settle(settling, settle_request(employee, token, "unasked", sms_code="123456"))
    assert answer.state == SETTLED


async def test_bad_requests_name_every_field_and_send_nothing(
    settling: RunningSidecar, simulator: RunningSimulator, employee: Person
) -> None:
    request = settle_request(
        employee,
        "",
        "bad id!",
        medical_type_code="",
        department_name="",
        total_fen=2999,
        fee_items=[
            gateway.FeeItem(item_code="A", item_name="x", quantity="1.00001",
                            unit_price_fen=1, total_fen=1),
            gateway.FeeItem(item_code="B", item_name="y", quantity="3",
                            unit_price_fen=333, total_fen=1000),
        ],
    )  # fmt: skip
    request.subject.certificate_number = employee.certno[:-1] + (
        "0" if employee.certno[-1] != "0" else "1"
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await settle(settling, request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = {field for field, _ in details(caught.value)[1]}
    assert fields == {
        "request_id", "ec_token", "medical_type_code", "department_name", "total_fen",
        "fee_items[0].quantity", "fee_items[1].total_fen", "subject.certificate_number",
    }  # fmt: skip
    assert employee.certno[:10] not in (caught.value.details() or "")
    assert simulator.app.calls.total == 0


async def test_another_institution_is_not_allowed_and_a_foreign_voucher_is_refused(
    settling: RunningSidecar, simulator: RunningSimulator, employee: Person
) -> None:
    app = simulator.app
    token = app.issue_ec_token(employee.certno)
    code, reason, _ = await outcome(
        settling, settle_request(employee, token, "elsewhere", institution_code="H11010500001")
    )
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_ALLOWED")
    resident = app.population.examples().resident
    code, reason, _ = await outcome(settling, settle_request(resident, token, "not-my-voucher"))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")
    expired = await outcome(settling, settle_request(employee, "ec" + "0" * 40, "expired"))
    assert expired[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "PLATFORM_REFUSED")
    assert app.calls.count("2201") == 0
    # refusals of 1101 (a read) give the key back: fixed, the same key settles
    answer = await settle(settling, settle_request(employee, token, "not-my-voucher"))
    assert answer.state == SETTLED


async def test_no_such_person_is_one_answer_in_settlement_and_enrollment(
    settling: RunningSidecar, simulator: RunningSimulator, employee: Person
) -> None:
    """Every configured "person not found" text is PERSON_NOT_FOUND in every function, with one
    message: settlement and enrollment used to keep two lists that had drifted apart."""
    app = simulator.app
    token = app.issue_ec_token(employee.certno)
    enrollment = gateway_grpc.InsuranceGatewayStub(settling.channel).GetEnrollment
    for index, text in enumerate(PlatformConfig.model_fields["person_not_found_messages"].default):
        app.faults.set("1101", Fault(FaultKind.REFUSE, times=2, err_msg=text))
        answers = []
        with pytest.raises(grpc.aio.AioRpcError) as settled:
            await settle(settling, settle_request(employee, token, f"nobody-{index}"))
        answers.append(settled.value)
        request = gateway.GetEnrollmentRequest(subject=subject_of(employee))
        with pytest.raises(grpc.aio.AioRpcError) as enrolled:
            await enrollment(request, metadata=TENANT_METADATA, timeout=CALL_TIMEOUT)
        answers.append(enrolled.value)
        for error in answers:
            info = details(error)[0]
            assert (error.code(), info.reason) == (grpc.StatusCode.NOT_FOUND, "PERSON_NOT_FOUND")
            assert info.metadata["platform_message"] == text
        assert answers[0].details() == answers[1].details()
    assert app.calls.count("2201") == 0
    # a 1101 refusal gives the key back: the same request_id settles once the person is found
    answer = await settle(settling, settle_request(employee, token, "nobody-0"))
    assert answer.state == SETTLED


@pytest.mark.parametrize("infno", ["1101", "2201", "2204", "2206"])
async def test_a_failure_before_2207_gives_the_key_back(
    settling: RunningSidecar,
    simulator: RunningSimulator,
    employee: Person,
    store_config: StoreConfig,
    infno: str,
) -> None:
    app = simulator.app
    request = settle_request(employee, app.issue_ec_token(employee.certno), f"early-{infno}")
    # 1101 is a query, retried three times; the others are sent once
    app.faults.set(infno, Fault(FaultKind.HTTP_5XX, times=3 if infno == "1101" else 1))
    code, reason, _ = await outcome(settling, request)
    assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "PLATFORM_UNAVAILABLE")
    assert app.calls.count("2207") == 0
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # nothing recorded under the key
        await stub_of(settling).GetSettlement(
            gateway.GetSettlementRequest(
                subject=subject_of(employee), original_request_id=f"early-{infno}"
            ),
            metadata=TENANT_METADATA,
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert (await settle(settling, request)).state == SETTLED  # the same key, now it works
    assert charges_by_settlement(app, employee.psn_no or "") == (1, 1)
    await audit(simulator, store_config)


@pytest.mark.slow
async def test_cancelling_a_pending_settlement_reverses_it(
    simulator: RunningSimulator, short_dir: Path, store_config: StoreConfig, employee: Person
) -> None:
    app = simulator.app
    quiet_resolver = {"resolver_interval_seconds": 600, "resolver_min_age_seconds": 600}
    settings = settlement_settings(
        simulator, short_dir, store_config, **MATRIX_SETTINGS, **quiet_resolver
    )
    async with consenting_sidecar(settings, simulator.app) as running:
        request = settle_request(employee, app.issue_ec_token(employee.certno), "pending")
        app.faults.set("2207", Fault(FaultKind.LATENCY, times=1, seconds=2.5))
        code, _, _ = await outcome(running, request)
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED
        while not app.ledger.charges(psn_no=employee.psn_no):  # the late 2207 lands
            await asyncio.sleep(0.05)
        assert charges_by_settlement(app, employee.psn_no or "") == (1, 1)
        pending = await stub_of(running).GetSettlement(
            gateway.GetSettlementRequest(
                subject=subject_of(employee), original_request_id="pending"
            ),
            metadata=TENANT_METADATA,
        )
        assert pending.settlement.state == PENDING and not pending.settlement.settlement_id
        cancel = gateway.CancelSettlementRequest(
            request_id="cancel-pending", subject=subject_of(employee), original_request_id="pending"
        )
        answer = await stub_of(running).CancelSettlement(cancel, metadata=TENANT_METADATA)
        assert answer.settlement.state == REVERSED and answer.settlement.HasField("cancel_time")
        assert app.calls.count("2208") == 0
        assert charges_by_settlement(app, employee.psn_no or "") == (1, 0)
    await audit(simulator, store_config)


async def test_duplicates_across_two_replicas_sharing_the_store_settle_once(
    simulator: RunningSimulator, short_dir: Path, store_config: StoreConfig, employee: Person
) -> None:
    app = simulator.app
    replicas = []
    for slot in (0, 1):
        directory = short_dir / f"r{slot}"
        directory.mkdir()
        settings = settlement_settings(simulator, directory, store_config)
        if replicas:  # replicas of one deployment share its secrets (and so the sealing key)
            settings = settings.model_copy(update={"consent": replicas[0].consent})
        platform = settings.platform.model_copy(
            update={"msgid": settings.platform.msgid.model_copy(update={"slot": slot, "slots": 2})}
        )
        replicas.append(settings.model_copy(update={"platform": platform}))
    request = settle_request(employee, app.issue_ec_token(employee.certno), "two-replicas")
    async with (
        consenting_sidecar(replicas[0], app) as one,
        consenting_sidecar(replicas[1], app) as two,
    ):
        answers = await asyncio.gather(*(settle(running, request) for running in (one, two) * 10))
    assert {a.state for a in answers} == {SETTLED}
    assert len({a.settlement_id for a in answers}) == 1
    assert app.calls.count("2207") == 1
    assert charges_by_settlement(app, employee.psn_no or "") == (1, 1)
    await audit(simulator, store_config)


async def test_a_settlement_and_its_cancellation_invalidate_the_cached_account(
    settling: RunningSidecar, simulator: RunningSimulator, employee: Person
) -> None:
    stub = stub_of(settling)
    account = gateway.GetAccountRequest(subject=subject_of(employee))

    async def balance() -> int:
        answer = await stub.GetAccount(account, metadata=TENANT_METADATA)
        return next(b.balance_fen for b in answer.balances if b.insurance_type_code == "310")

    before = await balance()
    assert await balance() == before  # from the cache
    reads = simulator.app.calls.count("1101")
    made = await settle(
        settling, settle_request(employee, simulator.app.issue_ec_token(employee.certno), "c1")
    )
    assert made.account_paid_fen > 0
    assert await balance() == before - made.account_paid_fen
    cancel = gateway.CancelSettlementRequest(
        request_id="c1-cancel", subject=subject_of(employee), settlement_id=made.settlement_id
    )
    await stub.CancelSettlement(cancel, metadata=TENANT_METADATA)
    assert await balance() == before
    assert simulator.app.calls.count("1101") == reads + 3  # the settlement's own, two reads


async def test_duplicates_waiting_on_a_key_that_is_given_back_settle_it_once(
    settling: RunningSidecar,
    simulator: RunningSimulator,
    employee: Person,
    store_config: StoreConfig,
) -> None:
    app = simulator.app
    request = settle_request(employee, app.issue_ec_token(employee.certno), "given-back")
    app.faults.set("2204", Fault(FaultKind.HTTP_5XX, times=1))  # the first holder fails early
    outcomes = await asyncio.gather(*(outcome(settling, request) for _ in range(10)))
    failed = [o for o in outcomes if o[2] is None]
    settled = [o[2] for o in outcomes if o[2] is not None]
    assert {(code, reason) for code, reason, _ in failed} <= {
        (grpc.StatusCode.UNAVAILABLE, "PLATFORM_UNAVAILABLE")
    }
    assert len(failed) == 1 and len(settled) == 9
    assert {s.state for s in settled} == {SETTLED}
    assert len({s.settlement_id for s in settled}) == 1
    assert app.calls.count("2201") == 2 and app.calls.count("2207") == 1
    assert charges_by_settlement(app, employee.psn_no or "") == (1, 1)
    await audit(simulator, store_config)

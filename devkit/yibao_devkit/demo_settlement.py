"""The demo's settlement act: settle with an e-voucher, repeat the key, cancel another settlement.

Kept apart from demo.py so the demo's other acts can grow without touching this one. The
e-voucher token stands in for the QR code the employee shows; the simulator prints it at start-up
(``--issue-ec-token``). Amounts are printed in yuan from exact fen.
"""

from __future__ import annotations

from collections.abc import Callable

from sidecar._proto.yibao.gateway.v1 import common_pb2 as common
from sidecar._proto.yibao.gateway.v1 import gateway_pb2 as gateway
from sidecar._proto.yibao.gateway.v1 import gateway_pb2_grpc as gateway_grpc
from yibao_devkit.simulator.population import Person

METADATA = (("x-yibao-tenant", "acme-corp"), ("x-yibao-operator", "im-bot-01"))
FEES = (("A001", "门诊诊查费", "1", 1200), ("B002", "阿莫西林胶囊", "2", 1850))


class ActFailed(Exception):
    """The settlement act did not answer as expected."""


def request(person: Person, ec_token: str, request_id: str) -> gateway.SettleWithEVoucherRequest:
    items = [
        gateway.FeeItem(
            item_code=code,
            item_name=name,
            quantity=quantity,
            unit_price_fen=price,
            total_fen=int(quantity) * price,
        )
        for code, name, quantity, price in FEES
    ]
    return gateway.SettleWithEVoucherRequest(
        request_id=request_id,
        subject=common.DataSubject(
            certificate_type=common.CERTIFICATE_TYPE_RESIDENT_ID_CARD,
            certificate_number=person.certno,
            name=person.psn_name,
        ),
        ec_token=ec_token,
        insurance_type=common.INSURANCE_TYPE_EMPLOYEE_BASIC,
        medical_type_code="11",
        department_code="A03",
        department_name="内科",
        doctor_code="D440300000001",
        doctor_name="张医生",
        diagnosis=common.Diagnosis(code="J06.900", name="急性上呼吸道感染"),
        fee_items=items,
        total_fen=sum(item.total_fen for item in items),
        use_personal_account=True,
    )


def yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


def describe(settlement: gateway.Settlement) -> str:
    state = gateway.SettlementState.Name(settlement.state).removeprefix("SETTLEMENT_STATE_")
    text = (
        f"{state} {settlement.settlement_id or '(no id)'}: total {yuan(settlement.total_fen)} = "
        f"fund {yuan(settlement.fund_paid_fen)} + account {yuan(settlement.account_paid_fen)} + "
        f"cash {yuan(settlement.cash_paid_fen)} + other {yuan(settlement.other_paid_fen)} yuan"
    )
    if settlement.HasField("account_balance_after_fen"):
        text += f"; account balance after {yuan(settlement.account_balance_after_fen)}"
    return text


async def act(
    stub: gateway_grpc.InsuranceGatewayAsyncStub,
    person: Person,
    ec_token: str,
    step: Callable[[str], None],
) -> None:
    """Settle, repeat the same request_id (no second charge), settle again and cancel that one."""
    first_request = request(person, ec_token, "demo-settle-1")
    first = (await stub.SettleWithEVoucher(first_request, metadata=METADATA, timeout=90)).settlement
    if first.state != gateway.SETTLEMENT_STATE_SETTLED:
        raise ActFailed("the first settlement was not settled")
    step(f"request_id demo-settle-1 -> {describe(first)}")

    again = (await stub.SettleWithEVoucher(first_request, metadata=METADATA, timeout=90)).settlement
    if again != first:
        raise ActFailed("a repeat of the same request_id answered something else")
    step(
        "same request_id again -> the same settlement "
        f"{again.settlement_id}, same balance after: no second charge"
    )

    second = (
        await stub.SettleWithEVoucher(
            request(person, ec_token, "demo-settle-2"), metadata=METADATA, timeout=90
        )
    ).settlement
    step(f"request_id demo-settle-2 -> {describe(second)}")
    cancel = gateway.CancelSettlementRequest(
        request_id="demo-cancel-1",
        subject=first_request.subject,
        settlement_id=second.settlement_id,
        reason="患者要求退费",
    )
    cancelled = (await stub.CancelSettlement(cancel, metadata=METADATA, timeout=90)).settlement
    if cancelled.state != gateway.SETTLEMENT_STATE_CANCELLED:
        raise ActFailed("the cancellation did not cancel")
    step(f"CancelSettlement {second.settlement_id} (2208) -> CANCELLED, the amounts are returned")
    read = await stub.GetSettlement(
        gateway.GetSettlementRequest(
            subject=first_request.subject, original_request_id="demo-settle-1"
        ),
        metadata=METADATA,
    )
    step(f"GetSettlement demo-settle-1 -> {describe(read.settlement)}")

"""Settlement with the e-voucher (电子凭证结算): settle, read it back, cancel it.

    python examples/settlement.py --certno 11010519491231002X --name 张三 --ec-token <QR token>

One request_id per settlement, chosen before the first attempt and kept: when the outcome is
unknown (the deadline passed, or PLATFORM_TIMEOUT), read it with GetSettlement by that
request_id, or repeat with the same key; never settle again with a new key meanwhile.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from _args import client_of, parse, parser, subject_of

from yibao_client import Client, DeadlineExceeded, Unavailable
from yibao_client.v1 import common, gateway

# Two items: 2 x 12.50 and 1.5 x 3.33 (4.995 rounds half-up to 5.00): 30.00 yuan in all.
FEES = (("A001", "门诊诊查费", "2", 1250, 2500), ("B002", "阿莫西林胶囊", "1.5", 333, 500))


def settle_request(
    subject: common.DataSubject, ec_token: str, request_id: str
) -> gateway.SettleWithEVoucherRequest:
    items = [
        gateway.FeeItem(item_code=c, item_name=n, quantity=q, unit_price_fen=p, total_fen=t)
        for c, n, q, p, t in FEES
    ]
    return gateway.SettleWithEVoucherRequest(
        request_id=request_id,
        subject=subject,
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


def settle(client: Client, subject: common.DataSubject, ec_token: str) -> gateway.Settlement:
    request_id = uuid.uuid4().hex  # keep it: it names this settlement from now on
    try:
        return client.settle_with_e_voucher(
            settle_request(subject, ec_token, request_id)
        ).settlement
    except (DeadlineExceeded, Unavailable):
        # Outcome unknown: the sidecar resolves it; read it by the same request_id.
        return settlement_of(client, subject, request_id)


def settlement_of(
    client: Client, subject: common.DataSubject, request_id: str
) -> gateway.Settlement:
    request = gateway.GetSettlementRequest(subject=subject, original_request_id=request_id)
    return client.get_settlement(request).settlement


def cancel(client: Client, subject: common.DataSubject, request_id: str) -> gateway.Settlement:
    answer = client.cancel_settlement(
        gateway.CancelSettlementRequest(
            request_id=uuid.uuid4().hex,
            subject=subject,
            original_request_id=request_id,
            reason="患者取消",
        )
    )
    return answer.settlement


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parser(__doc__.splitlines()[0])
    arguments.add_argument("--ec-token", required=True, help="token decoded from the QR code")
    arguments.add_argument("--cancel", action="store_true", help="cancel it again at the end")
    args = parse(arguments, argv)
    with client_of(args) as client:
        made = settle(client, subject_of(args), args.ec_token)
        state = gateway.SettlementState.Name(made.state)
        print("settlement", made.settlement_id, state, f"cash {made.cash_paid_fen} 分")
        if args.cancel:
            undone = cancel(client, subject_of(args), made.request_id)
            print("now", gateway.SettlementState.Name(undone.state))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

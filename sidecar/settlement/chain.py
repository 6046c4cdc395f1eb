"""The platform's side of a settlement: the inputs of 1101, 2201, 2204, 2206, 2207, 2208 and 2601,
and the reading of 2207's answer into exact fen.

Pure functions over validated values; no I/O. Amounts go out as ``Decimal`` yuan (the envelope
writes them as exact JSON numbers) and come back as ``Decimal`` (the envelope parses them so).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from sidecar.domain.subjects import Subject
from sidecar.platform.envelope import INF_TIME_FORMAT

EC_TOKEN = "01"  # noqa: S105 - mdtrt_cert_type of the e-voucher token, not a secret
SETTLE_BY_ITEMS = "01"  # psn_setlway 按项目结算
_FEN = Decimal(100)


@dataclass(frozen=True)
class FeeLine:
    """One validated fee item; ``quantity`` is the caller's decimal string, already checked."""

    code: str
    name: str
    quantity: Decimal
    unit_price_fen: int
    total_fen: int


@dataclass(frozen=True)
class Confirmation:
    """A second confirmation to forward in 2207's input, under the region's field name."""

    field: str
    value: str

    def __repr__(self) -> str:
        return f"Confirmation({self.field!r}, ...)"


@dataclass(frozen=True)
class Order:
    """A validated SettleWithEVoucher request in the platform's terms."""

    subject: Subject
    ec_token: str
    insurance_type_code: str
    medical_type_code: str
    department_code: str
    department_name: str
    doctor_code: str
    doctor_name: str
    diagnosis_code: str
    diagnosis_name: str
    fees: tuple[FeeLine, ...]
    total_fen: int
    use_personal_account: bool
    confirmation: Confirmation | None

    def __repr__(self) -> str:  # the token and the subject are never printed
        return f"Order({self.insurance_type_code}, {len(self.fees)} items, {self.total_fen} fen)"


@dataclass(frozen=True)
class Person:
    """What 1101 told us about the token's holder."""

    psn_no: str
    insured_area: str


@dataclass(frozen=True)
class Charged:
    """2207's answer in fen; ``other_fen`` closes the sum to the total."""

    setl_id: str
    total_fen: int
    fund_fen: int
    account_fen: int
    cash_fen: int
    other_fen: int
    balance_after_fen: int | None


class AnswerProblem(Exception):
    """An answer lacks what the chain needs, or its figures do not add up."""


def yuan(fen: int) -> Decimal:
    return (Decimal(fen) / _FEN).quantize(Decimal("0.01"))


def fen(value: Any, what: str) -> int:
    """An amount the platform wrote in yuan as exact fen; AnswerProblem if it is not one."""
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        raise AnswerProblem(f"{what} is not a number") from None
    scaled = amount * _FEN
    if not scaled.is_finite() or scaled != scaled.to_integral_value():
        raise AnswerProblem(f"{what} is not a whole number of fen")
    return int(scaled)


def person_input(order: Order, now: dt.datetime) -> dict[str, Any]:
    """1101 by the e-voucher token; the platform checks the holder against the subject."""
    return {
        "data": {
            "mdtrt_cert_type": EC_TOKEN,
            "mdtrt_cert_no": order.ec_token,
            "card_sn": "",
            "begntime": now.strftime(INF_TIME_FORMAT),
            "psn_cert_type": order.subject.certificate_type_code,
            "certno": order.subject.certificate_number,
            "psn_name": order.subject.name,
        }
    }


def person_from(output: Any, insurance_type_code: str) -> Person:
    base = output.get("baseinfo") if isinstance(output, Mapping) else None
    psn_no = _text(base, "psn_no")
    if not psn_no:
        raise AnswerProblem("1101 answer has no psn_no")
    rows = output.get("insuinfo") if isinstance(output, Mapping) else None
    area = ""
    for row in rows if isinstance(rows, list) else []:
        if _text(row, "insutype") == insurance_type_code:
            area = _text(row, "insuplc_admdvs")
            break
    return Person(psn_no=psn_no, insured_area=area)


def registration_input(
    order: Order, person: Person, visit_number: str, now: dt.datetime
) -> dict[str, Any]:
    """2201: open the outpatient visit under a number unique to this attempt."""
    return {
        "data": {
            "psn_no": person.psn_no,
            "insutype": order.insurance_type_code,
            "begntime": now.strftime(INF_TIME_FORMAT),
            "mdtrt_cert_type": EC_TOKEN,
            "mdtrt_cert_no": order.ec_token,
            "med_type": order.medical_type_code,
            "ipt_otp_no": visit_number,
            "atddr_no": order.doctor_code,
            "dr_name": order.doctor_name,
            "dept_code": order.department_code,
            "dept_name": order.department_name,
            "caty": order.department_code[:10],
        }
    }


def visit_from(output: Any) -> str:
    mdtrt_id = _text(output.get("data") if isinstance(output, Mapping) else None, "mdtrt_id")
    if not mdtrt_id:
        raise AnswerProblem("2201 answer has no mdtrt_id")
    return mdtrt_id


def fees_input(
    order: Order, person: Person, mdtrt_id: str, batch: str, now: dt.datetime
) -> dict[str, Any]:
    """2204: every fee item of the bill, in one batch."""
    return {
        "feedetail": [
            {
                "feedetl_sn": f"{batch}-{index + 1}"[-30:],
                "mdtrt_id": mdtrt_id,
                "psn_no": person.psn_no,
                "chrg_bchno": batch,
                "med_list_codg": line.code,
                "medins_list_codg": line.code,
                "fee_ocur_time": now.strftime(INF_TIME_FORMAT),
                "det_item_fee_sumamt": yuan(line.total_fen),
                "cnt": line.quantity,
                "pric": yuan(line.unit_price_fen),
            }
            for index, line in enumerate(order.fees)
        ]
    }


def settlement_input(
    order: Order, person: Person, mdtrt_id: str, batch: str, *, final: bool
) -> dict[str, Any]:
    """2206 (``final=False``) or 2207; 2207 carries the second confirmation if there is one."""
    data: dict[str, Any] = {
        "psn_no": person.psn_no,
        "mdtrt_cert_type": EC_TOKEN,
        "mdtrt_cert_no": order.ec_token,
        "med_type": order.medical_type_code,
        "medfee_sumamt": yuan(order.total_fen),
        "psn_setlway": SETTLE_BY_ITEMS,
        "mdtrt_id": mdtrt_id,
        "chrg_bchno": batch,
        "insutype": order.insurance_type_code,
        "acct_used_flag": "1" if order.use_personal_account else "0",
    }
    if final and order.confirmation is not None:
        data[order.confirmation.field] = order.confirmation.value
    return {"data": data}


def charged_from(output: Any, total_fen: int, msgid: str) -> Charged:
    """2207's ``setlinfo`` in fen, checked: our total, our msgid echoed, parts adding up."""
    info = output.get("setlinfo") if isinstance(output, Mapping) else None
    if not isinstance(info, Mapping):
        raise AnswerProblem("2207 answer has no setlinfo")
    setl_id = _text(info, "setl_id")
    if not setl_id:
        raise AnswerProblem("2207 answer has no setl_id")
    echoed = _text(info, "medins_setl_id")
    if echoed and echoed != msgid:
        raise AnswerProblem("2207 answer names another message")
    total = fen(info.get("medfee_sumamt"), "medfee_sumamt")
    if total != total_fen:
        raise AnswerProblem("2207 answer settled another total")
    fund = fen(info.get("fund_pay_sumamt"), "fund_pay_sumamt")
    account = fen(info.get("acct_pay"), "acct_pay")
    cash = fen(info.get("psn_cash_pay"), "psn_cash_pay")
    other = total - fund - account - cash
    if min(fund, account, cash, other) < 0:
        raise AnswerProblem("2207 answer's parts do not add up to its total")
    balance = info.get("balc")
    return Charged(
        setl_id=setl_id,
        total_fen=total,
        fund_fen=fund,
        account_fen=account,
        cash_fen=cash,
        other_fen=other,
        balance_after_fen=None if balance in (None, "") else fen(balance, "balc"),
    )


def reversal_input(psn_no: str, msgid: str, infno: str) -> dict[str, Any]:
    """2601 names the original by its msgid and infno."""
    return {"data": {"psn_no": psn_no, "omsgid": msgid, "oinfno": infno}}


def cancellation_input(setl_id: str, mdtrt_id: str, psn_no: str) -> dict[str, Any]:
    return {"data": {"setl_id": setl_id, "mdtrt_id": mdtrt_id, "psn_no": psn_no}}


def balance_after_cancellation(output: Any) -> int | None:
    info = output.get("setlinfo") if isinstance(output, Mapping) else None
    value = info.get("balc") if isinstance(info, Mapping) else None
    return None if value in (None, "") else fen(value, "balc")


def _text(item: Any, key: str) -> str:
    value = item.get(key) if isinstance(item, Mapping) else None
    return "" if value is None else str(value)

"""2201 outpatient registration (门诊挂号) and 2204 fee details upload (门诊费用明细信息上传).

2201 opens a visit for the person the voucher names and answers its ``mdtrt_id``. 2204 adds fee
items to a visit and answers, per item, how it is covered (see :mod:`..policy`).
An upload is all or nothing: every item is checked before any is added. An item's
``det_item_fee_sumamt`` must equal ``cnt`` x ``pric`` to the fen (one fen of rounding allowed).
"""

from __future__ import annotations

import decimal
from collections.abc import Mapping
from typing import Any, Final

from yibao_devkit.simulator import errors, policy
from yibao_devkit.simulator.transactions import people
from yibao_devkit.simulator.transactions.inputs import (
    moment,
    money,
    number,
    rows,
    section,
    text,
)
from yibao_devkit.simulator.transactions.registry import Transaction, TransactionContext
from yibao_devkit.simulator.visits import FeeItem, Visit
from yibao_devkit.simulator.wire import JsonObject, Money

DEFAULT_MED_TYPE: Final = "11"  # 普通门诊
_HUNDRED = decimal.Decimal(100)


def register(payload: Mapping[str, Any], ctx: TransactionContext) -> JsonObject:
    data = section(payload, "data")
    psn_no = text(data, "psn_no", 30)
    insutype = text(data, "insutype", 6)
    begntime = moment(data, "begntime")
    cert_type = text(data, "mdtrt_cert_type", 3)
    cert_no = text(data, "mdtrt_cert_no", 50)
    card_sn = text(data, "card_sn", 32, required=False)
    ipt_otp_no = text(data, "ipt_otp_no", 30)
    med_type = text(data, "med_type", 6, required=False) or DEFAULT_MED_TYPE
    for field, limit in (("atddr_no", 30), ("dr_name", 50), ("dept_code", 30),
                         ("dept_name", 100), ("caty", 10)):  # fmt: skip
        text(data, field, limit)
    assert begntime is not None
    if med_type not in policy.OUTPATIENT_MED_TYPES:
        raise errors.Refusal(errors.MED_TYPE_INVALID.format(value=med_type))

    person = people.by_voucher(ctx, cert_type, cert_no, card_sn)
    if person.psn_no != psn_no:
        raise errors.Refusal(errors.VOUCHER_PERSON_MISMATCH)
    problem = people.entitlement_problem(people.enrollment(person, insutype), begntime.date())
    if problem is not None:
        raise errors.Refusal(problem)
    if ctx.state.visits.number_taken(ipt_otp_no):
        raise errors.Refusal(errors.IPT_OTP_NO_DUPLICATE.format(value=ipt_otp_no))

    mdtrt_id = ctx.state.serials.next(ctx.now)
    ctx.state.visits.open(
        Visit(
            mdtrt_id=mdtrt_id,
            psn_no=psn_no,
            insutype=insutype,
            med_type=med_type,
            begntime=begntime,
            ipt_otp_no=ipt_otp_no,
        )
    )
    return {"data": {"mdtrt_id": mdtrt_id, "psn_no": psn_no, "ipt_otp_no": ipt_otp_no}}


def upload_fees(payload: Mapping[str, Any], ctx: TransactionContext) -> JsonObject:
    details = rows(payload, "feedetail")
    if not details:
        raise errors.Refusal(errors.FEE_DETAIL_EMPTY)
    mdtrt_id = text(details[0], "mdtrt_id", 30)
    psn_no = text(details[0], "psn_no", 30)
    visit = ctx.state.visits.get(mdtrt_id)
    if visit is None:
        raise errors.Refusal(errors.VISIT_NOT_FOUND.format(mdtrt_id=mdtrt_id))
    if visit.psn_no != psn_no:
        raise errors.Refusal(errors.VISIT_PERSON_MISMATCH)
    if visit.settled_by is not None:
        raise errors.Refusal(errors.VISIT_SETTLED)

    items: list[FeeItem] = []
    seen: set[str] = set()
    for detail in details:
        item = _item(detail, mdtrt_id, psn_no)
        if item.feedetl_sn in seen or visit.has_item(item.feedetl_sn):
            raise errors.Refusal(errors.FEE_DETAIL_DUPLICATE.format(sn=item.feedetl_sn))
        seen.add(item.feedetl_sn)
        items.append(item)
    for item in items:
        visit.add(item)
    return {"result": [_result(item) for item in items]}


def _item(detail: Mapping[str, Any], mdtrt_id: str, psn_no: str) -> FeeItem:
    sn = text(detail, "feedetl_sn", 30)
    if text(detail, "mdtrt_id", 30) != mdtrt_id or text(detail, "psn_no", 30) != psn_no:
        raise errors.Refusal(errors.VISIT_PERSON_MISMATCH)
    chrg_bchno = text(detail, "chrg_bchno", 30)
    code = text(detail, "med_list_codg", 50)
    text(detail, "medins_list_codg", 150, required=False)
    text(detail, "fee_ocur_time", 19, required=False)
    amount = money(detail, "det_item_fee_sumamt")
    cnt = number(detail, "cnt")
    pric = number(detail, "pric")
    expected = (cnt * pric * _HUNDRED).quantize(decimal.Decimal(1), decimal.ROUND_HALF_UP)
    if abs(expected - amount) > 1:
        raise errors.Refusal(errors.FEE_DETAIL_AMOUNT.format(sn=sn))
    item_class = policy.classify(code)
    return FeeItem(
        feedetl_sn=sn,
        chrg_bchno=chrg_bchno,
        med_list_codg=code,
        cnt=cnt,
        pric=pric,
        det_item_fee_sumamt=amount,
        item_class=item_class,
        shares=policy.item_shares(amount, item_class),
    )


def _result(item: FeeItem) -> JsonObject:
    return {
        "feedetl_sn": item.feedetl_sn,
        "det_item_fee_sumamt": Money(item.det_item_fee_sumamt),
        "cnt": item.cnt,
        "pric": item.pric,
        "pric_uplmt_amt": None,
        "selfpay_prop": (decimal.Decimal(item.item_class.selfpay_percent) / _HUNDRED).quantize(
            decimal.Decimal("0.01")
        ),
        "fulamt_ownpay_amt": Money(item.shares.fulamt_ownpay_amt),
        "overlmt_amt": Money(0),
        "preselfpay_amt": Money(item.shares.preselfpay_amt),
        "inscp_scp_amt": Money(item.shares.inscp_scp_amt),
        "chrgitm_lv": item.item_class.chrgitm_lv,
        "med_chrgitm_type": None,
        "bas_medn_flag": "0",
        "hi_nego_drug_flag": "0",
        "chld_medc_flag": "0",
        "list_sp_item_flag": "0",
        "lmt_used_flag": "0",
        "drt_reim_flag": "0",
        "memo": None,
    }


TRANSACTIONS = (
    Transaction("2201", "门诊挂号", register),
    Transaction("2204", "门诊费用明细信息上传", upload_fees),
)

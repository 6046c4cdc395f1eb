"""2206 pre-settlement (预结算), 2207 settlement (结算) and 2208 settlement cancellation (撤销).

Pre-settlement and settlement price the visit's uploaded bill the same way (see
:mod:`~yibao_devkit.simulator.policy`); only settlement commits it: it debits the personal account
(``acct_used_flag`` 1, up to the balance), adds to the year's cumulative figures, marks the visit
settled and writes a charge to the ledger under the request's ``msgid``. ``medfee_sumamt`` must
equal the uploaded total exactly, and ``medins_setl_id`` echoes the sender's ``msgid``.

When the regional second confirmation is switched on (see
:mod:`~yibao_devkit.simulator.confirmation`), 2207 refuses without the confirmation code.

Cancellation (2208) and reversal (2601, see :mod:`reversal`) both go through :func:`undo`: the
account is credited back, the cumulative figures are taken back out of the original month, the
visit reopens and the ledger records the undoing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from yibao_devkit.simulator import errors, policy, times
from yibao_devkit.simulator.accounts import MovementKind
from yibao_devkit.simulator.ledger import EntryKind, LedgerEntry
from yibao_devkit.simulator.population import INSUTYPE_EMPLOYEE, Person
from yibao_devkit.simulator.settlements import Settlement, Status
from yibao_devkit.simulator.transactions import people
from yibao_devkit.simulator.transactions.inputs import choice, money, section, text
from yibao_devkit.simulator.transactions.registry import Transaction, TransactionContext
from yibao_devkit.simulator.visits import Visit
from yibao_devkit.simulator.wire import Json, JsonObject, Money

SETLWAYS: Final = frozenset({"01", "02"})  # 按项目结算, 按定额结算
FLAGS: Final = frozenset({"0", "1"})
CLR_WAY_ITEMS: Final = "1"  # 清算方式: 按项目
CLR_TYPE_OUTPATIENT: Final = "11"  # 清算类别: 门诊


def pre_settle(payload: Mapping[str, Any], ctx: TransactionContext) -> JsonObject:
    data = section(payload, "data")
    person, visit, figures = _price(data, ctx)
    return {"setlinfo": _setlinfo(person, visit, figures, ctx, setl_id=None, medins_setl_id=None)}


def settle(payload: Mapping[str, Any], ctx: TransactionContext) -> JsonObject:
    data = section(payload, "data")
    person, visit, figures = _price(data, ctx)
    confirmation = ctx.state.confirmation
    if confirmation.required:
        code = text(data, confirmation.field, 64, required=False)
        if not code:
            raise errors.Refusal(errors.CONFIRMATION_REQUIRED.format(field=confirmation.field))
        if not confirmation.matches(visit.psn_no, visit.mdtrt_id, code):
            raise errors.Refusal(errors.CONFIRMATION_WRONG)

    state = ctx.state
    setl_id = state.serials.next(ctx.now)
    if figures.acct_pay:
        state.accounts.move(
            visit.psn_no,
            -figures.acct_pay,
            at=ctx.now,
            kind=MovementKind.SETTLEMENT,
            setl_id=setl_id,
        )
    state.cumulative.add(visit.psn_no, visit.insutype, ctx.now.date(), _cumulated(figures, 1))
    settlement = Settlement(
        setl_id=setl_id,
        msgid=ctx.envelope.msgid,
        infno=ctx.envelope.infno,
        mdtrt_id=visit.mdtrt_id,
        psn_no=visit.psn_no,
        insutype=visit.insutype,
        med_type=text(data, "med_type", 6),
        at=ctx.now,
        figures=figures,
    )
    state.settlements.add(settlement)
    visit.settled_by = setl_id
    visit.med_type = settlement.med_type
    state.ledger.record(_entry(EntryKind.CHARGE, settlement, ctx))
    return {
        "setlinfo": _setlinfo(
            person, visit, figures, ctx, setl_id=setl_id, medins_setl_id=ctx.envelope.msgid
        ),
        "setldetail": _setldetail(visit, figures),
    }


def cancel(payload: Mapping[str, Any], ctx: TransactionContext) -> JsonObject:
    data = section(payload, "data")
    setl_id = text(data, "setl_id", 30)
    mdtrt_id = text(data, "mdtrt_id", 30)
    psn_no = text(data, "psn_no", 30)
    settlement = ctx.state.settlements.get(setl_id)
    if settlement is None:
        raise errors.Refusal(errors.SETTLEMENT_NOT_FOUND.format(setl_id=setl_id))
    if settlement.mdtrt_id != mdtrt_id or settlement.psn_no != psn_no:
        raise errors.Refusal(errors.SETTLEMENT_MISMATCH)
    if not settlement.standing:
        raise errors.Refusal(errors.SETTLEMENT_CANCELLED.format(setl_id=setl_id))
    balance = undo(settlement, ctx, Status.CANCELLED)
    figures = settlement.figures
    return {
        "setlinfo": {
            "setl_id": ctx.state.serials.next(ctx.now),  # the cancellation's own record
            "init_setl_id": settlement.setl_id,
            "mdtrt_id": mdtrt_id,
            "psn_no": psn_no,
            "setl_time": times.format_datetime(ctx.now),
            "medfee_sumamt": Money(-figures.medfee_sumamt),
            "fund_pay_sumamt": Money(-figures.fund_pay_sumamt),
            "acct_pay": Money(-figures.acct_pay),
            "psn_cash_pay": Money(-figures.psn_cash_pay),
            "balc": Money(balance),
            "medins_setl_id": ctx.envelope.msgid,
        }
    }


def undo(settlement: Settlement, ctx: TransactionContext, status: Status) -> int:
    """Take a standing settlement back; the account balance afterwards."""
    state = ctx.state
    figures = settlement.figures
    settlement.status = status
    if figures.acct_pay:
        kind = MovementKind.CANCELLATION if status is Status.CANCELLED else MovementKind.REVERSAL
        state.accounts.move(
            settlement.psn_no, figures.acct_pay, at=ctx.now, kind=kind, setl_id=settlement.setl_id
        )
    state.cumulative.add(
        settlement.psn_no, settlement.insutype, settlement.at.date(), _cumulated(figures, -1)
    )
    visit = state.visits.get(settlement.mdtrt_id)
    if visit is not None and visit.settled_by == settlement.setl_id:
        visit.settled_by = None
    entry = EntryKind.CANCELLATION if status is Status.CANCELLED else EntryKind.REVERSAL
    state.ledger.record(_entry(entry, settlement, ctx))
    return state.accounts.balance(settlement.psn_no)


def _price(
    data: Mapping[str, Any], ctx: TransactionContext
) -> tuple[Person, Visit, policy.Figures]:
    """Check a (pre-)settlement request against the visit and price its bill."""
    psn_no = text(data, "psn_no", 30)
    cert_type = text(data, "mdtrt_cert_type", 3)
    cert_no = text(data, "mdtrt_cert_no", 50)
    card_sn = text(data, "card_sn", 32, required=False)
    med_type = text(data, "med_type", 6)
    medfee = money(data, "medfee_sumamt")
    choice(data, "psn_setlway", SETLWAYS)
    mdtrt_id = text(data, "mdtrt_id", 30)
    chrg_bchno = text(data, "chrg_bchno", 30, required=False)
    insutype = text(data, "insutype", 6)
    use_account = choice(data, "acct_used_flag", FLAGS, default="0") == "1"
    text(data, "invono", 20, required=False)
    if med_type not in policy.OUTPATIENT_MED_TYPES:
        raise errors.Refusal(errors.MED_TYPE_INVALID.format(value=med_type))

    visit = ctx.state.visits.get(mdtrt_id)
    if visit is None:
        raise errors.Refusal(errors.VISIT_NOT_FOUND.format(mdtrt_id=mdtrt_id))
    if visit.psn_no != psn_no:
        raise errors.Refusal(errors.VISIT_PERSON_MISMATCH)
    person = people.by_voucher(ctx, cert_type, cert_no, card_sn)
    if person.psn_no != psn_no:
        raise errors.Refusal(errors.VOUCHER_PERSON_MISMATCH)
    if insutype != visit.insutype:
        raise errors.Refusal(errors.FIELD_BAD_VALUE.format(field="insutype"))
    row = people.enrollment(person, insutype)
    problem = people.entitlement_problem(row, ctx.now.date())
    if problem is not None:
        raise errors.Refusal(problem)
    if visit.settled_by is not None:
        raise errors.Refusal(errors.VISIT_SETTLED)
    if not visit.items:
        raise errors.Refusal(errors.FEE_DETAIL_NONE)
    if chrg_bchno and chrg_bchno not in visit.batches:
        raise errors.Refusal(errors.CHRG_BCHNO_UNKNOWN.format(value=chrg_bchno))
    if medfee != visit.medfee_sumamt:
        raise errors.Refusal(
            errors.MEDFEE_MISMATCH.format(
                given=Money(medfee).to_json(), uploaded=Money(visit.medfee_sumamt).to_json()
            )
        )
    used = ctx.state.cumulative.year_to_date(psn_no, insutype, ctx.now.year)
    balance = ctx.state.accounts.balance(psn_no) if insutype == INSUTYPE_EMPLOYEE else 0
    figures = policy.settle(
        medfee_sumamt=visit.medfee_sumamt,
        fulamt_ownpay_amt=visit.fulamt_ownpay_amt,
        preselfpay_amt=visit.preselfpay_amt,
        inscp_scp_amt=visit.inscp_scp_amt,
        scheme=policy.scheme_for(row),
        deductible_used=used[policy.CUM_DEDUCTIBLE],
        fund_paid=used[policy.CUM_FUND_PAY],
        balance=balance,
        use_account=use_account,
    )
    return person, visit, figures


def _cumulated(figures: policy.Figures, sign: int) -> dict[str, int]:
    return {
        policy.CUM_DEDUCTIBLE: sign * figures.act_pay_dedc,
        policy.CUM_FUND_PAY: sign * figures.fund_pay_sumamt,
        policy.CUM_MEDFEE: sign * figures.medfee_sumamt,
        policy.CUM_ACCT_PAY: sign * figures.acct_pay,
    }


def _entry(kind: EntryKind, settlement: Settlement, ctx: TransactionContext) -> LedgerEntry:
    figures = settlement.figures
    return LedgerEntry(
        kind=kind,
        msgid=ctx.envelope.msgid,
        infno=ctx.envelope.infno,
        setl_id=settlement.setl_id,
        mdtrt_id=settlement.mdtrt_id,
        psn_no=settlement.psn_no,
        medfee_sumamt=figures.medfee_sumamt,
        fund_pay_sumamt=figures.fund_pay_sumamt,
        acct_pay=figures.acct_pay,
        psn_cash_pay=figures.psn_cash_pay,
        at=ctx.now,
    )


def _setlinfo(
    person: Person,
    visit: Visit,
    figures: policy.Figures,
    ctx: TransactionContext,
    *,
    setl_id: str | None,
    medins_setl_id: str | None,
) -> JsonObject:
    row = people.enrollment(person, visit.insutype)
    return {
        "setl_id": setl_id,
        "mdtrt_id": visit.mdtrt_id,
        "psn_no": visit.psn_no,
        "psn_name": person.psn_name,
        "psn_cert_type": person.psn_cert_type,
        "certno": person.certno,
        "gend": person.gend,
        "naty": person.naty,
        "brdy": times.format_date(person.brdy),
        "age": person.age_on(ctx.now.date()),
        "insutype": visit.insutype,
        "psn_type": row.psn_type,
        "cvlserv_flag": row.cvlserv_flag,
        "setl_time": times.format_datetime(ctx.now),
        "med_type": visit.med_type,
        "medfee_sumamt": Money(figures.medfee_sumamt),
        "fulamt_ownpay_amt": Money(figures.fulamt_ownpay_amt),
        "overlmt_selfpay": Money(0),
        "preselfpay_amt": Money(figures.preselfpay_amt),
        "inscp_scp_amt": Money(figures.inscp_scp_amt),
        "act_pay_dedc": Money(figures.act_pay_dedc),
        "hifp_pay": Money(figures.fund_pay_sumamt),
        "pool_prop_selfpay": Money(figures.pool_prop_selfpay),
        "cvlserv_pay": Money(0),
        "hifes_pay": Money(0),
        "hifmi_pay": Money(0),
        "hifob_pay": Money(0),
        "maf_pay": Money(0),
        "oth_pay": Money(0),
        "fund_pay_sumamt": Money(figures.fund_pay_sumamt),
        "psn_part_amt": Money(figures.psn_part_amt),
        "acct_pay": Money(figures.acct_pay),
        "psn_cash_pay": Money(figures.psn_cash_pay),
        "hosp_part_amt": Money(0),
        "balc": Money(figures.balc),
        "acct_mulaid_pay": Money(0),
        "medins_setl_id": medins_setl_id,
        "clr_org": row.insuplc_admdvs,
        "clr_way": CLR_WAY_ITEMS,
        "clr_type": CLR_TYPE_OUTPATIENT,
    }


def _setldetail(visit: Visit, figures: policy.Figures) -> list[Json]:
    if not figures.fund_pay_sumamt:
        return []
    return [
        {
            "fund_pay_type": "310100" if visit.insutype == INSUTYPE_EMPLOYEE else "390100",
            "inscp_scp_amt": Money(figures.inscp_scp_amt),
            "crt_payb_lmt_amt": None,
            "fund_payamt": Money(figures.fund_pay_sumamt),
            "fund_pay_type_name": "统筹基金支出",
            "setl_proc_info": None,
        }
    ]


TRANSACTIONS = (
    Transaction("2206", "门诊预结算", pre_settle),
    Transaction("2207", "门诊结算", settle),
    Transaction("2208", "门诊结算撤销", cancel),
)

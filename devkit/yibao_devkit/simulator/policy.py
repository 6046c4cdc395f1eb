"""Benefit rules: who pays how much of an outpatient bill. Illustrative, not any region's.

Real rules are regional and change yearly; the simulator needs rules that are simple, exact and
visibly at work, so that a sidecar's tests see the fund, the personal account and the cash share
move, a deductible fill up and an annual cap bite. All arithmetic is in integer fen; shares are
rounded half up to the fen.

* Items: a catalogue code starting ``ZF`` is fully self-paid (丙类), one starting ``Z`` carries a
  10 % self-paid share first (乙类), every other code is fully covered (甲类).
* Schemes per enrolment: employees in service pay a 200-yuan yearly deductible then the fund pays
  70 % up to 5,000 yuan a year; retired employees 100 yuan, 80 %, 6,000 yuan; residents (390) no
  deductible, 50 %, 2,000 yuan.
* What the fund does not pay is the person's share: the personal account pays it, up to its
  balance, when the sender asks (``acct_used_flag`` 1), the rest is cash.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from yibao_devkit.simulator.population import INSUTYPE_RESIDENT, PSN_TYPE_RETIRED, Enrollment

# 医疗类别 (med_type) the simulated region accepts; outpatient ones may be settled with 2207.
MED_TYPES: Final = {
    "11": "普通门诊",
    "12": "门诊挂号",
    "13": "急诊",
    "14": "门诊慢特病",
    "21": "普通住院",
    "41": "定点药店购药",
}
OUTPATIENT_MED_TYPES: Final = frozenset({"11", "12", "13", "14"})

# Cumulative figure codes (累计类别代码) answered by 5206; illustrative, the real list is regional.
CUM_DEDUCTIBLE: Final = "C001"  # 起付线累计
CUM_FUND_PAY: Final = "C002"  # 统筹基金支付累计
CUM_MEDFEE: Final = "C003"  # 医疗费用总额累计
CUM_ACCT_PAY: Final = "C004"  # 个人账户支付累计
CUM_CODES: Final = (CUM_DEDUCTIBLE, CUM_FUND_PAY, CUM_MEDFEE, CUM_ACCT_PAY)


@dataclass(frozen=True)
class Scheme:
    """The outpatient pooling rules of one enrolment."""

    deductible: int  # fen per calendar year
    rate_percent: int  # the fund's share above the deductible
    annual_cap: int  # fen the fund pays at most per calendar year
    fund_pay_type: str  # 基金支付类型 reported by 2001 and in setldetail


_IN_SERVICE = Scheme(20_000, 70, 500_000, "310100")
_RETIRED = Scheme(10_000, 80, 600_000, "310100")
_RESIDENT = Scheme(0, 50, 200_000, "390100")


def scheme_for(enrollment: Enrollment) -> Scheme:
    if enrollment.insutype == INSUTYPE_RESIDENT:
        return _RESIDENT
    return _RETIRED if enrollment.psn_type == PSN_TYPE_RETIRED else _IN_SERVICE


@dataclass(frozen=True)
class ItemClass:
    """How a catalogue item is covered: 甲类 01, 乙类 02, 丙类 03."""

    chrgitm_lv: str
    selfpay_percent: int  # share paid by the person before pooling (100 = fully self-paid)


_CLASS_A = ItemClass("01", 0)
_CLASS_B = ItemClass("02", 10)
_CLASS_C = ItemClass("03", 100)


def classify(med_list_codg: str) -> ItemClass:
    if med_list_codg.startswith("ZF"):
        return _CLASS_C
    if med_list_codg.startswith("Z"):
        return _CLASS_B
    return _CLASS_A


@dataclass(frozen=True)
class ItemShares:
    """One fee item's split: fully self-paid, self-paid share first, and the covered rest."""

    fulamt_ownpay_amt: int
    preselfpay_amt: int
    inscp_scp_amt: int


def item_shares(amount: int, item: ItemClass) -> ItemShares:
    if item.selfpay_percent >= 100:
        return ItemShares(amount, 0, 0)
    preselfpay = percent(amount, item.selfpay_percent)
    return ItemShares(0, preselfpay, amount - preselfpay)


@dataclass(frozen=True)
class Figures:
    """The settlement of one bill; every amount in fen, and they add up exactly.

    ``medfee_sumamt = fund_pay_sumamt + acct_pay + psn_cash_pay``.
    """

    medfee_sumamt: int
    fulamt_ownpay_amt: int
    preselfpay_amt: int
    inscp_scp_amt: int
    act_pay_dedc: int  # the part of the covered amount that filled the deductible
    fund_pay_sumamt: int
    pool_prop_selfpay: int  # the person's share of the covered amount above the deductible
    psn_part_amt: int
    acct_pay: int
    psn_cash_pay: int
    balc: int  # the account balance after this settlement


def settle(
    *,
    medfee_sumamt: int,
    fulamt_ownpay_amt: int,
    preselfpay_amt: int,
    inscp_scp_amt: int,
    scheme: Scheme,
    deductible_used: int,
    fund_paid: int,
    balance: int,
    use_account: bool,
) -> Figures:
    """Split a bill given what this year has already used up of the deductible and the cap."""
    act_pay_dedc = min(inscp_scp_amt, max(0, scheme.deductible - deductible_used))
    above = inscp_scp_amt - act_pay_dedc
    fund = min(percent(above, scheme.rate_percent), max(0, scheme.annual_cap - fund_paid))
    psn_part = medfee_sumamt - fund
    acct = min(balance, psn_part) if use_account else 0
    return Figures(
        medfee_sumamt=medfee_sumamt,
        fulamt_ownpay_amt=fulamt_ownpay_amt,
        preselfpay_amt=preselfpay_amt,
        inscp_scp_amt=inscp_scp_amt,
        act_pay_dedc=act_pay_dedc,
        fund_pay_sumamt=fund,
        pool_prop_selfpay=above - fund,
        psn_part_amt=psn_part,
        acct_pay=acct,
        psn_cash_pay=psn_part - acct,
        balc=balance - acct,
    )


def percent(amount: int, share: int) -> int:
    """``share`` percent of ``amount`` fen, rounded half up."""
    return (amount * share + 50) // 100

"""Outpatient visits (门诊就诊): registered by 2201, filled with fee details by 2204.

A visit keeps running totals of its uploaded items, so pre-settlement and settlement read the bill
in constant time however many items were uploaded. A visit holds at most one standing settlement;
cancelling or reversing it reopens the visit, so it can be settled again, as on the platform.
"""

from __future__ import annotations

import datetime as dt
import decimal
from dataclasses import dataclass, field

from yibao_devkit.simulator.policy import ItemClass, ItemShares


@dataclass(frozen=True)
class FeeItem:
    """One uploaded fee detail (费用明细) and how it is covered."""

    feedetl_sn: str
    chrg_bchno: str
    med_list_codg: str
    cnt: decimal.Decimal
    pric: decimal.Decimal
    det_item_fee_sumamt: int
    item_class: ItemClass
    shares: ItemShares


@dataclass
class Visit:
    """One outpatient visit and its bill so far."""

    mdtrt_id: str
    psn_no: str
    insutype: str
    med_type: str
    begntime: dt.datetime
    ipt_otp_no: str
    items: list[FeeItem] = field(default_factory=list, init=False)
    batches: set[str] = field(default_factory=set, init=False)
    medfee_sumamt: int = 0
    fulamt_ownpay_amt: int = 0
    preselfpay_amt: int = 0
    inscp_scp_amt: int = 0
    settled_by: str | None = None  # setl_id of the standing settlement
    _sns: set[str] = field(default_factory=set, init=False, repr=False)

    def has_item(self, feedetl_sn: str) -> bool:
        return feedetl_sn in self._sns

    def add(self, item: FeeItem) -> None:
        self.items.append(item)
        self._sns.add(item.feedetl_sn)
        self.batches.add(item.chrg_bchno)
        self.medfee_sumamt += item.det_item_fee_sumamt
        self.fulamt_ownpay_amt += item.shares.fulamt_ownpay_amt
        self.preselfpay_amt += item.shares.preselfpay_amt
        self.inscp_scp_amt += item.shares.inscp_scp_amt


class Visits:
    """Every visit, by ``mdtrt_id``, with the institution's outpatient numbers kept unique."""

    def __init__(self) -> None:
        self._by_id: dict[str, Visit] = {}
        self._ipt_otp_nos: set[str] = set()

    def open(self, visit: Visit) -> None:
        self._by_id[visit.mdtrt_id] = visit
        self._ipt_otp_nos.add(visit.ipt_otp_no)

    def get(self, mdtrt_id: str) -> Visit | None:
        return self._by_id.get(mdtrt_id)

    def number_taken(self, ipt_otp_no: str) -> bool:
        return ipt_otp_no in self._ipt_otp_nos

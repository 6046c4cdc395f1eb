"""Settlements (结算) made by 2207 and their fate: standing, cancelled (2208) or reversed (2601).

Kept by ``setl_id`` and by the ``msgid`` of the request that made them, which is how a reversal
names its original (``omsgid``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import Enum

from yibao_devkit.simulator.policy import Figures


class Status(Enum):
    STANDING = "standing"
    CANCELLED = "cancelled"
    REVERSED = "reversed"


@dataclass
class Settlement:
    """One settlement; ``figures`` are what was charged."""

    setl_id: str
    msgid: str
    infno: str
    mdtrt_id: str
    psn_no: str
    insutype: str
    med_type: str
    at: dt.datetime
    figures: Figures
    status: Status = Status.STANDING

    @property
    def standing(self) -> bool:
        return self.status is Status.STANDING


class Settlements:
    """Every settlement, by ``setl_id`` and by the sender's ``msgid``."""

    def __init__(self) -> None:
        self._by_id: dict[str, Settlement] = {}
        self._by_msgid: dict[str, Settlement] = {}

    def add(self, settlement: Settlement) -> None:
        self._by_id[settlement.setl_id] = settlement
        self._by_msgid[settlement.msgid] = settlement

    def get(self, setl_id: str) -> Settlement | None:
        return self._by_id.get(setl_id)

    def by_msgid(self, msgid: str) -> Settlement | None:
        return self._by_msgid.get(msgid)

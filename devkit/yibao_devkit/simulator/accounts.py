"""Personal accounts (个人账户): live balances and their movements.

A person's account is the ``balc`` of their employee enrolment (310); resident insurance has no
account. Balances start at the population's figure and then move with settlements (2207 debits),
cancellations (2208) and reversals (2601), which credit the debit back. Every movement is kept so
that the regional statement query can page through them; movements are appended in time order,
so a date range is found by bisection.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from yibao_devkit.simulator.population import INSUTYPE_EMPLOYEE, Population


class MovementKind(Enum):
    """Why an account moved; the value is the code the statement query answers."""

    SETTLEMENT = "01"  # 结算支出
    CANCELLATION = "02"  # 结算撤销退回
    REVERSAL = "03"  # 冲正退回

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {
    MovementKind.SETTLEMENT: "结算支出",
    MovementKind.CANCELLATION: "结算撤销退回",
    MovementKind.REVERSAL: "冲正退回",
}


@dataclass(frozen=True)
class Movement:
    """One change of a balance: ``amount`` is signed fen (debits negative)."""

    at: dt.datetime
    kind: MovementKind
    amount: int
    balance_after: int
    setl_id: str


class Accounts:
    """Balances (integer fen) of the population's personal accounts, created on first use."""

    def __init__(self, population: Population) -> None:
        self._population = population
        self._balances: dict[str, int] = {}
        self._movements: dict[str, list[Movement]] = {}

    def has_account(self, psn_no: str) -> bool:
        """Whether the person has an employee enrolment, hence a personal account."""
        return self._opening(psn_no) is not None

    def balance(self, psn_no: str) -> int:
        """The current balance; 0 for people without an account."""
        current = self._balances.get(psn_no)
        if current is None:
            current = self._opening(psn_no) or 0
        return current

    def opening_balance(self, psn_no: str) -> int:
        """The balance before the simulator moved it."""
        return self._opening(psn_no) or 0

    def move(
        self, psn_no: str, amount: int, *, at: dt.datetime, kind: MovementKind, setl_id: str
    ) -> Movement:
        """Change the balance by ``amount`` (negative to debit); refuses to go below zero."""
        after = self.balance(psn_no) + amount
        if after < 0:
            raise ValueError("a personal account cannot go negative")
        if amount != 0 and not self.has_account(psn_no):
            raise ValueError("this person has no personal account")
        self._balances[psn_no] = after
        movement = Movement(at, kind, amount, after, setl_id)
        self._movements.setdefault(psn_no, []).append(movement)
        return movement

    def movements(
        self, psn_no: str, begin: dt.datetime | None = None, end: dt.datetime | None = None
    ) -> Sequence[Movement]:
        """The movements in ``[begin, end)`` (either may be open), oldest first."""
        entries = self._movements.get(psn_no, [])
        low = 0 if begin is None else bisect.bisect_left(entries, begin, key=_moment)
        high = len(entries) if end is None else bisect.bisect_left(entries, end, key=_moment)
        return entries[low:high]

    def _opening(self, psn_no: str) -> int | None:
        person = self._population.find_psn_no(psn_no)
        if person is None:
            return None
        for row in person.insuinfo:
            if row.insutype == INSUTYPE_EMPLOYEE:
                return row.balc
        return None


def _moment(movement: Movement) -> dt.datetime:
    return movement.at

"""The ledger: every charge the platform made and every undoing of one, for tests to audit.

A *charge* is a successful settlement (2207, or its regional variant); a *cancellation* (2208)
or a *reversal* (2601) undoes exactly one charge. Entries carry the sender's ``msgid`` so a test
can assert "at most one charge per request" after retries, timeouts and dropped connections, and
the amounts so it can reconcile balances. The ledger is append-only; whether a charge is still
standing is derived from the entries that undo it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum


class EntryKind(Enum):
    CHARGE = "charge"
    CANCELLATION = "cancellation"
    REVERSAL = "reversal"


@dataclass(frozen=True)
class LedgerEntry:
    """One money event; amounts are integer fen, positive for the charge and for its undoing."""

    kind: EntryKind
    msgid: str  # the msgid of the request that caused this entry
    infno: str  # its transaction code as received (e.g. 2207, or a regional variant)
    setl_id: str  # the settlement charged or undone
    mdtrt_id: str
    psn_no: str
    medfee_sumamt: int
    fund_pay_sumamt: int
    acct_pay: int
    psn_cash_pay: int
    at: dt.datetime


class Ledger:
    """Append-only list of charges, cancellations and reversals."""

    def __init__(self) -> None:
        self._entries: list[LedgerEntry] = []
        self._undone: set[str] = set()

    def record(self, entry: LedgerEntry) -> None:
        if entry.kind is not EntryKind.CHARGE:
            if entry.setl_id in self._undone:
                raise ValueError("a charge can be undone only once")
            self._undone.add(entry.setl_id)
        self._entries.append(entry)

    @property
    def entries(self) -> Sequence[LedgerEntry]:
        """Everything, in the order it happened."""
        return tuple(self._entries)

    def charges(self, *, msgid: str | None = None, psn_no: str | None = None) -> list[LedgerEntry]:
        """Charges, optionally only those caused by ``msgid`` or for ``psn_no``."""
        return [
            entry
            for entry in self._entries
            if entry.kind is EntryKind.CHARGE
            and (msgid is None or entry.msgid == msgid)
            and (psn_no is None or entry.psn_no == psn_no)
        ]

    def active_charges(self, *, psn_no: str | None = None) -> list[LedgerEntry]:
        """Charges that were neither cancelled nor reversed."""
        return [entry for entry in self.charges(psn_no=psn_no) if entry.setl_id not in self._undone]

    def is_undone(self, setl_id: str) -> bool:
        return setl_id in self._undone

    def __len__(self) -> int:
        return len(self._entries)

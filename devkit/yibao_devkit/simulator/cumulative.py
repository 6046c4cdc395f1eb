"""Yearly cumulative figures (人员累计信息) per person, insurance type, year and month.

Two sources feed them: a seeded history (months of the current year before the simulator
started, and whole earlier years), generated deterministically from the population seed and the
person number the first time a person's year is touched, and the settlements made while the
simulator runs (2207 adds, 2208 and 2601 take the same amounts back out of the original month).
The seeded visits go through the same :mod:`policy` as live ones, so a person's deductible may be
partly used before the first live settlement, as it would be in November.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass

from yibao_devkit.simulator import policy
from yibao_devkit.simulator.population import INSUTYPE_EMPLOYEE, INSUTYPE_RESIDENT, Population

CUMULATED_INSUTYPES = frozenset({INSUTYPE_EMPLOYEE, INSUTYPE_RESIDENT})
_VISIT_CHANCE = 0.35  # per seeded month
_MAX_SEEDED_FEE = 60_000  # fen


@dataclass(frozen=True)
class Row:
    """One line of 5206: a cumulative figure through a month."""

    insutype: str
    year: int
    cum_type_code: str
    cum: int  # fen


_Months = list[dict[str, int]]  # index 0..11 -> code -> fen


class Cumulative:
    """Monthly cumulative amounts, seeded lazily and updated by settlements."""

    def __init__(self, population: Population, opened: dt.date) -> None:
        self._population = population
        self._opened = opened
        self._years: dict[tuple[str, str, int], _Months] = {}

    def add(self, psn_no: str, insutype: str, when: dt.date, amounts: Mapping[str, int]) -> None:
        """Add ``amounts`` (fen per figure code; negative to take back) to ``when``'s month."""
        month = self._months(psn_no, insutype, when.year)[when.month - 1]
        for code, amount in amounts.items():
            month[code] = month.get(code, 0) + amount

    def year_to_date(self, psn_no: str, insutype: str, year: int) -> Mapping[str, int]:
        """Each figure summed over the whole of ``year`` so far."""
        return self._through(self._months(psn_no, insutype, year), 12)

    def through(self, psn_no: str, year: int, month: int) -> list[Row]:
        """Every figure of every cumulated enrolment, summed from January through ``month``."""
        person = self._population.find_psn_no(psn_no)
        if person is None:
            return []
        found: list[Row] = []
        for insutype in sorted({row.insutype for row in person.insuinfo} & CUMULATED_INSUTYPES):
            totals = self._through(self._months(psn_no, insutype, year), month)
            found.extend(Row(insutype, year, code, totals[code]) for code in policy.CUM_CODES)
        return found

    @staticmethod
    def _through(months: _Months, month: int) -> dict[str, int]:
        totals = dict.fromkeys(policy.CUM_CODES, 0)
        for figures in months[:month]:
            for code, amount in figures.items():
                totals[code] += amount
        return totals

    def _months(self, psn_no: str, insutype: str, year: int) -> _Months:
        key = (psn_no, insutype, year)
        months = self._years.get(key)
        if months is None:
            months = self._seed(psn_no, insutype, year)
            self._years[key] = months
        return months

    def _seed(self, psn_no: str, insutype: str, year: int) -> _Months:
        months: _Months = [{} for _ in range(12)]
        person = self._population.find_psn_no(psn_no)
        rows = person.insuinfo if person is not None else ()
        enrollment = next((row for row in rows if row.insutype == insutype), None)
        if enrollment is None or year > self._opened.year:
            return months
        last = 12 if year < self._opened.year else self._opened.month - 1
        digest = hashlib.sha256(f"{self._population.seed}:{psn_no}:{insutype}:{year}".encode())
        rng = random.Random(digest.digest())  # noqa: S311 - reproducible synthetic history
        scheme = policy.scheme_for(enrollment)
        deductible = fund = 0
        for index in range(last):
            if rng.random() >= _VISIT_CHANCE:
                continue
            fee = rng.randrange(2_000, _MAX_SEEDED_FEE)
            figures = policy.settle(
                medfee_sumamt=fee,
                fulamt_ownpay_amt=0,
                preselfpay_amt=0,
                inscp_scp_amt=fee,
                scheme=scheme,
                deductible_used=deductible,
                fund_paid=fund,
                balance=0,
                use_account=False,
            )
            deductible += figures.act_pay_dedc
            fund += figures.fund_pay_sumamt
            months[index] = {
                policy.CUM_DEDUCTIBLE: figures.act_pay_dedc,
                policy.CUM_FUND_PAY: figures.fund_pay_sumamt,
                policy.CUM_MEDFEE: fee,
            }
        return months

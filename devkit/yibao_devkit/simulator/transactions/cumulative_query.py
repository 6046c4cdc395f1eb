"""5206 cumulative information (人员累计信息查询): the year's figures through a month.

``cum_ym`` (``yyyyMM``) names the month; the answer sums, per cumulated insurance type and figure
code (see :mod:`..policy`), January of that year through that month: the seeded
history plus every standing settlement (see :mod:`~yibao_devkit.simulator.cumulative`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from yibao_devkit.simulator import errors, times
from yibao_devkit.simulator.transactions import people
from yibao_devkit.simulator.transactions.inputs import section, text
from yibao_devkit.simulator.transactions.registry import Transaction, TransactionContext
from yibao_devkit.simulator.wire import JsonObject, Money


def cumulative(payload: Mapping[str, Any], ctx: TransactionContext) -> JsonObject:
    data = section(payload, "data")
    psn_no = text(data, "psn_no", 30)
    cum_ym = text(data, "cum_ym", 6)
    month = times.parse_month(cum_ym)
    if month is None:
        raise errors.Refusal(errors.DATE_INVALID.format(field="cum_ym"))
    people.by_psn_no(ctx, psn_no)
    year, through = month
    return {
        "cuminfo": [
            {
                "insutype": row.insutype,
                "year": str(row.year),
                "cum_ym": cum_ym,
                "cum_type_code": row.cum_type_code,
                "cum": Money(row.cum),
            }
            for row in ctx.state.cumulative.through(psn_no, year, through)
        ]
    }


TRANSACTIONS = (Transaction("5206", "人员累计信息查询", cumulative),)

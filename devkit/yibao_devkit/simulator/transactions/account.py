"""5307 personal-account statement (个人账户明细查询): a **regional, simulator-defined** query.

The national interface has no standard account-statement transaction; some regions offer one
under a code of their own. The simulator answers it under ``5307`` by default; register an alias
(or a different code) for a region's variant. Entries are the account's movements made while the
simulator runs (settlement debits, cancellation and reversal credits), oldest first, filtered to
``[begntime, endtime)`` when given, and paged (``page_num`` from 1, ``page_size`` up to 100).

Input ``data``: ``psn_no``, optional ``begntime``/``endtime`` (``yyyy-MM-dd HH:mm:ss``),
``page_num``, ``page_size``. Output: ``data`` {psn_no, balc, page_num, page_size, total} and
``acctdetl`` [{chg_time, chg_type, chg_type_name, chg_amt (signed), aft_balc, setl_id}].
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, Final

from yibao_devkit.simulator import errors, times
from yibao_devkit.simulator.transactions import people
from yibao_devkit.simulator.transactions.inputs import moment, section, text
from yibao_devkit.simulator.transactions.registry import Transaction, TransactionContext
from yibao_devkit.simulator.wire import JsonObject, Money

STATEMENT_CODE: Final = "5307"
DEFAULT_PAGE_SIZE: Final = 20
MAX_PAGE_SIZE: Final = 100


def statement(payload: Mapping[str, Any], ctx: TransactionContext) -> JsonObject:
    data = section(payload, "data")
    psn_no = text(data, "psn_no", 30)
    begin = moment(data, "begntime", required=False)
    end = moment(data, "endtime", required=False)
    page_num = _positive(data, "page_num", 1, None)
    page_size = _positive(data, "page_size", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    people.by_psn_no(ctx, psn_no)
    accounts = ctx.state.accounts
    movements = accounts.movements(psn_no, _aware(begin), _aware(end))
    first = (page_num - 1) * page_size
    return {
        "data": {
            "psn_no": psn_no,
            "balc": Money(accounts.balance(psn_no)),
            "page_num": page_num,
            "page_size": page_size,
            "total": len(movements),
        },
        "acctdetl": [
            {
                "chg_time": times.format_datetime(movement.at),
                "chg_type": movement.kind.value,
                "chg_type_name": movement.kind.label,
                "chg_amt": Money(movement.amount),
                "aft_balc": Money(movement.balance_after),
                "setl_id": movement.setl_id,
            }
            for movement in movements[first : first + page_size]
        ],
    }


def _positive(data: Mapping[str, Any], field: str, default: int, limit: int | None) -> int:
    value = data.get(field)
    if value is None or value == "":
        return default
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise errors.Refusal(errors.FIELD_BAD_VALUE.format(field=field))
    return value if limit is None else min(value, limit)


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    return None if value is None else value.replace(tzinfo=times.BEIJING)


TRANSACTIONS = (Transaction(STATEMENT_CODE, "个人账户明细查询（地方扩展）", statement),)

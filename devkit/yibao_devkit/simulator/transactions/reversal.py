"""2601 reversal (冲正): undo a settlement named by the msgid and infno of its request.

A sender that got no answer to a settlement (timeout, dropped connection) cannot know whether it
was charged; it sends 2601 with ``omsgid`` (the original msgid) and ``oinfno`` (the original
transaction code as sent, e.g. ``2207`` or a regional variant). Outcomes:

* the original settlement stands: it is reversed (account credited back, figures taken back,
  ledger entry), ``infcode`` 0;
* no settlement was made under ``omsgid`` (never received, or refused): ``infcode`` -1 with
  :data:`~yibao_devkit.simulator.errors.REVERSAL_NOT_FOUND`, meaning nothing was charged;
* it was already reversed or cancelled: ``infcode`` -1 with
  :data:`~yibao_devkit.simulator.errors.REVERSAL_ALREADY`, meaning nothing is charged any more;
* ``oinfno`` or ``psn_no`` do not match the original: ``infcode`` -1.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from yibao_devkit.simulator import errors, times
from yibao_devkit.simulator.settlements import Status
from yibao_devkit.simulator.transactions.inputs import section, text
from yibao_devkit.simulator.transactions.registry import Transaction, TransactionContext
from yibao_devkit.simulator.transactions.settlement import undo
from yibao_devkit.simulator.wire import JsonObject, Money


def reverse(payload: Mapping[str, Any], ctx: TransactionContext) -> JsonObject:
    data = section(payload, "data")
    psn_no = text(data, "psn_no", 30)
    omsgid = text(data, "omsgid", 30)
    oinfno = text(data, "oinfno", 5)
    settlement = ctx.state.settlements.by_msgid(omsgid)
    if settlement is None:
        raise errors.Refusal(errors.REVERSAL_NOT_FOUND)
    if settlement.infno != oinfno:
        raise errors.Refusal(errors.REVERSAL_INFNO_MISMATCH)
    if settlement.psn_no != psn_no:
        raise errors.Refusal(errors.REVERSAL_PERSON_MISMATCH)
    if not settlement.standing:
        raise errors.Refusal(errors.REVERSAL_ALREADY)
    balance = undo(settlement, ctx, Status.REVERSED)
    return {
        "data": {
            "omsgid": omsgid,
            "oinfno": oinfno,
            "setl_id": settlement.setl_id,
            "psn_no": psn_no,
            "rever_time": times.format_datetime(ctx.now),
            "acct_pay": Money(settlement.figures.acct_pay),
            "balc": Money(balance),
        }
    }


TRANSACTIONS = (Transaction("2601", "冲正交易", reverse),)

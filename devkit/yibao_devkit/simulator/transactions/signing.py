"""9001 sign-in (签到) and 9002 sign-out (签退)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from yibao_devkit.simulator import errors, times
from yibao_devkit.simulator.transactions.inputs import section, text
from yibao_devkit.simulator.transactions.registry import Transaction, TransactionContext
from yibao_devkit.simulator.wire import JsonObject


def sign_in(payload: Mapping[str, Any], ctx: TransactionContext) -> JsonObject:
    """Issue a sign_no to the operator, superseding the one they held."""
    data = section(payload, "signIn")
    opter_no = text(data, "opter_no", 30)
    text(data, "mac", 20)
    text(data, "ip", 40)
    if opter_no != ctx.envelope.opter:
        raise errors.Refusal(errors.SIGN_IN_OPERATOR_MISMATCH)
    sign_no = ctx.state.sign_ins.sign_in(opter_no, ctx.now)
    return {"signinoutb": {"sign_time": times.format_datetime(ctx.now), "sign_no": sign_no}}


def sign_out(payload: Mapping[str, Any], ctx: TransactionContext) -> JsonObject:
    """End the operator's session if the given sign_no is the one they hold."""
    data = section(payload, "signOut")
    sign_no = text(data, "sign_no", 30)
    opter_no = text(data, "opter_no", 30)
    if not ctx.state.sign_ins.sign_out(opter_no, sign_no):
        raise errors.Refusal(errors.SIGN_IN_INVALID)
    return {"signoutoutb": {"sign_time": times.format_datetime(ctx.now)}}


TRANSACTIONS = (
    Transaction("9001", "签到", sign_in, requires_sign_in=False),
    Transaction("9002", "签退", sign_out),
)

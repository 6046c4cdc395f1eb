"""Property: whatever mix of settlements, cancellations and reversals (some of them on dropped
connections) the sidecar sends, the personal account balance equals the opening balance minus the
account share of the charges still standing, and never goes negative."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.devkit.simulator.support import Session, fee_item, register_input, settle_input
from yibao_devkit.simulator import Fault, FaultKind, PlatformSimulator, Population

# An operation: ("settle", amount in fen, use account, drop the answer) | ("cancel", pick)
# | ("reverse", pick), where pick chooses among the settlements made so far.
settle = st.tuples(st.just("settle"), st.integers(1, 300_000), st.booleans(), st.booleans())
undo = st.tuples(st.sampled_from(["cancel", "reverse"]), st.integers(0, 50))
operations = st.lists(st.one_of(settle, undo), min_size=1, max_size=8)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=operations)
async def test_balance_is_opening_minus_standing_charges(
    session: Session, population: Population, steps: list[tuple[Any, ...]]
) -> None:
    # One simulator serves every example, so the invariant must hold across them too.
    app: PlatformSimulator = session.simulator.app
    employee = population.examples().employee
    psn_no = employee.psn_no
    assert psn_no is not None
    opening = app.state.accounts.opening_balance(psn_no)
    made: list[tuple[str, str, str]] = []  # (msgid, setl_id, mdtrt_id)
    for step in steps:
        if step[0] == "settle":
            _, fen, use_account, drop = step
            visit = await session.ok("2201", register_input(psn_no, employee.certno))
            mdtrt_id = visit["data"]["mdtrt_id"]
            amount = f"{Decimal(fen) / 100:.2f}"
            await session.ok("2204", {"feedetail": [fee_item(mdtrt_id, psn_no, "F1", pric=amount)]})
            body = session.body(
                "2207",
                settle_input(
                    psn_no, employee.certno, mdtrt_id, amount, acct="1" if use_account else "0"
                ),
            )
            if drop:
                app.faults.set("2207", Fault(FaultKind.COMMIT_THEN_DROP, times=1))
                with pytest.raises(httpx.TransportError):
                    await session.post(body)
            else:
                answer = (await session.post(body)).json()
                assert answer["infcode"] == 0, answer["err_msg"]
            [charge] = app.ledger.charges(msgid=body["msgid"])
            made.append((body["msgid"], charge.setl_id, mdtrt_id))
        elif made:
            msgid, setl_id, mdtrt_id = made[step[1] % len(made)]
            if step[0] == "cancel":
                payload = {"data": {"setl_id": setl_id, "mdtrt_id": mdtrt_id, "psn_no": psn_no}}
                await session.call("2208", payload)  # refused when already undone: fine
            else:
                payload = {"data": {"psn_no": psn_no, "omsgid": msgid, "oinfno": "2207"}}
                await session.call("2601", payload)
        standing = sum(charge.acct_pay for charge in app.ledger.active_charges(psn_no=psn_no))
        current = app.state.accounts.balance(psn_no)
        assert current == opening - standing
        assert current >= 0
    for _, setl_id, _ in made:
        assert len([c for c in app.ledger.charges() if c.setl_id == setl_id]) == 1

"""Duplicate msgid: an identical resend replays the first answer, a different body is refused."""

from __future__ import annotations

import httpx
import pytest

from tests.devkit.simulator.support import OPERATOR, Session, person_input
from tests.devkit.simulator.test_faults import settlement_body
from yibao_devkit.simulator import Fault, FaultKind, PlatformSimulator, Population, errors


async def test_identical_resend_replays_the_first_answer_without_charging_again(
    session: Session, population: Population
) -> None:
    app: PlatformSimulator = session.simulator.app
    body = await settlement_body(session, population)
    first = await session.post(body)
    again = await session.post(body)
    assert first.json()["infcode"] == 0
    assert again.content == first.content  # byte for byte, same inf_refmsgid and setl_id
    assert len(app.ledger.charges()) == 1
    assert app.calls.count("2207") == 2


async def test_different_body_under_an_accepted_msgid_is_refused(
    session: Session, population: Population
) -> None:
    app: PlatformSimulator = session.simulator.app
    body = await settlement_body(session, population)
    employee = population.examples().employee
    lookup = session.body("1101", person_input(employee.certno, employee.psn_name))
    assert (await session.post(lookup)).json()["infcode"] == 0
    reused = {**body, "msgid": lookup["msgid"]}
    answer = (await session.post(reused)).json()
    assert (answer["infcode"], answer["err_msg"]) == (
        -1,
        errors.MSGID_DUPLICATE.format(msgid=lookup["msgid"]),
    )
    assert app.ledger.charges() == []
    # A refused business request still consumes its msgid: the refusal is replayed too.
    wrong = {**body, "input": {"data": {**body["input"]["data"], "medfee_sumamt": "1.00"}}}
    refused = (await session.post(wrong)).json()
    assert refused["infcode"] == -1
    assert (await session.post(wrong)).json() == refused


async def test_requests_refused_before_dispatch_do_not_consume_the_msgid(
    session: Session, population: Population
) -> None:
    """A sender may sign in again and resend under the same msgid."""
    app: PlatformSimulator = session.simulator.app
    employee = population.examples().employee
    body = session.body("1101", person_input(employee.certno, employee.psn_name))
    app.sign_ins.invalidate_all()
    stale = (await session.post(body)).json()
    assert stale["err_msg"] == errors.SIGN_IN_INVALID
    sign_no = await session.sign_in()
    assert app.sign_ins.current(OPERATOR) == sign_no
    assert (await session.post({**body, "sign_no": sign_no})).json()["infcode"] == 0


async def test_resend_after_commit_then_drop_returns_the_committed_answer(
    session: Session, population: Population
) -> None:
    app: PlatformSimulator = session.simulator.app
    body = await settlement_body(session, population)
    app.faults.set("2207", Fault(FaultKind.COMMIT_THEN_DROP, times=1))
    with pytest.raises(httpx.TransportError):
        await session.post(body)
    replayed = (await session.post(body)).json()
    [charge] = app.ledger.charges()
    assert replayed["output"]["setlinfo"]["setl_id"] == charge.setl_id
    assert charge.msgid == body["msgid"]

"""Fault switches, each observed from a real mTLS client."""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.devkit.simulator.support import (
    OPERATOR,
    EnvelopeFactory,
    Session,
    person_input,
    settle_input,
    sign_in_input,
)
from tests.devkit.simulator.test_transactions import ITEMS, balance, open_visit
from yibao_devkit.devcerts import DevPki
from yibao_devkit.simulator import (
    Fault,
    FaultKind,
    PlatformSimulator,
    Population,
    errors,
    running_simulator,
)
from yibao_devkit.simulator.faults import MAX_HOLD, Faults, parse
from yibao_devkit.simulator.security import CORRUPT_SIGNATURE


def person_payload(population: Population) -> dict[str, Any]:
    employee = population.examples().employee
    return person_input(employee.certno, employee.psn_name)


def app_of(session: Session) -> PlatformSimulator:
    app: PlatformSimulator = session.simulator.app
    return app


async def settlement_body(session: Session, population: Population) -> dict[str, Any]:
    """A 2207 request for a fresh visit of the example employee, not yet sent."""
    employee = population.examples().employee
    assert employee.psn_no is not None
    mdtrt_id, total = await open_visit(session, employee, ITEMS)
    return session.body(
        "2207", settle_input(employee.psn_no, employee.certno, mdtrt_id, str(total))
    )


async def test_latency_delays_the_answer_then_clears(
    session: Session, population: Population
) -> None:
    app_of(session).faults.set("1101", Fault(FaultKind.LATENCY, seconds=0.5, times=1))
    started = time.monotonic()
    assert (await session.call("1101", person_payload(population)))["infcode"] == 0
    assert time.monotonic() - started >= 0.45
    started = time.monotonic()
    assert (await session.call("1101", person_payload(population)))["infcode"] == 0
    assert time.monotonic() - started < 0.4
    assert not app_of(session).faults


async def test_timeout_holds_then_drops_without_performing(
    session: Session, population: Population
) -> None:
    app = app_of(session)
    body = await settlement_body(session, population)
    app.faults.set("2207", Fault(FaultKind.TIMEOUT, seconds=1.0, times=1))
    with pytest.raises(httpx.TimeoutException):
        await session.client.post(session.simulator.endpoint, json=_plain(body), timeout=0.3)
    await asyncio.sleep(1.0)  # past the hold: the platform gave up without settling
    assert app.ledger.charges() == []
    assert app.calls.count("2207") == 1


async def test_http_5xx(session: Session, population: Population) -> None:
    app_of(session).faults.set("1101", Fault(FaultKind.HTTP_5XX, status=502, times=1))
    response = await session.post(session.body("1101", person_payload(population)))
    assert response.status_code == 502
    assert response.headers["content-type"].startswith("text/plain")
    assert (await session.call("1101", person_payload(population)))["infcode"] == 0


async def test_reset_drops_the_connection_without_an_answer(
    session: Session, population: Population
) -> None:
    app_of(session).faults.set("1101", Fault(FaultKind.RESET, times=1))
    with pytest.raises(httpx.TransportError):
        await session.post(session.body("1101", person_payload(population)))
    # The client reconnects and the platform behaves again.
    assert (await session.call("1101", person_payload(population)))["infcode"] == 0


async def test_reset_over_http11(session: Session, population: Population) -> None:
    app_of(session).faults.set("1101", Fault(FaultKind.RESET, times=1))
    context = session.simulator.client_ssl_context()
    async with httpx.AsyncClient(http2=False, verify=context, timeout=5) as http1:
        with pytest.raises(httpx.TransportError):
            await http1.post(
                session.simulator.endpoint,
                json=_plain(session.body("1101", person_payload(population))),
            )


async def test_malformed_json_answer(session: Session, population: Population) -> None:
    app_of(session).faults.set("1101", Fault(FaultKind.MALFORMED_JSON, times=1))
    response = await session.post(session.body("1101", person_payload(population)))
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()


async def test_bad_signature_answer(session: Session, population: Population) -> None:
    app_of(session).faults.set("1101", Fault(FaultKind.BAD_SIGNATURE, times=1))
    answer = await session.call("1101", person_payload(population))
    assert answer["infcode"] == 0
    assert (answer["cainfo"], answer["signtype"]) == (CORRUPT_SIGNATURE, "SM2")
    assert (await session.call("1101", person_payload(population)))["cainfo"] is None


async def test_business_refusal(session: Session, population: Population) -> None:
    faults = app_of(session).faults
    faults.set("1101", Fault(FaultKind.REFUSE, times=1))
    assert await session.refused("1101", person_payload(population)) == errors.SYSTEM_BUSY
    faults.set("1101", Fault(FaultKind.REFUSE, err_msg="中心系统维护中", times=1))
    assert await session.refused("1101", person_payload(population)) == "中心系统维护中"


async def test_expired_sign_in(session: Session, population: Population) -> None:
    app = app_of(session)
    app.faults.set("1101", Fault(FaultKind.EXPIRED_SIGN_IN, times=1))
    assert await session.refused("1101", person_payload(population)) == errors.SIGN_IN_INVALID
    assert app.sign_ins.current(OPERATOR) is None
    await session.sign_in()
    assert (await session.call("1101", person_payload(population)))["infcode"] == 0


async def test_commit_then_drop_charges_then_2601_reverses(
    session: Session, population: Population
) -> None:
    app = app_of(session)
    employee = population.examples().employee
    before = await balance(session, employee)
    body = await settlement_body(session, population)
    app.faults.set("2207", Fault(FaultKind.COMMIT_THEN_DROP, times=1))
    with pytest.raises(httpx.TransportError):
        await session.post(body)
    charges = app.ledger.charges(msgid=body["msgid"])
    assert len(charges) == 1 and charges[0].acct_pay > 0
    assert await balance(session, employee) == before - Decimal(charges[0].acct_pay) / 100

    reverse = {"data": {"psn_no": employee.psn_no, "omsgid": body["msgid"], "oinfno": "2207"}}
    assert (await session.ok("2601", reverse))["data"]["setl_id"] == charges[0].setl_id
    assert app.ledger.active_charges() == []
    assert await balance(session, employee) == before


async def test_times_limits_and_wildcard(session: Session, population: Population) -> None:
    faults = app_of(session).faults
    faults.set("*", Fault(FaultKind.HTTP_5XX, times=2))
    statuses = [
        (await session.post(session.body("1101", person_payload(population)))).status_code
        for _ in range(3)
    ]
    assert statuses == [503, 503, 200]
    faults.set("*", Fault(FaultKind.HTTP_5XX))
    faults.set("1101", Fault(FaultKind.REFUSE))  # the exact code wins over *
    assert await session.refused("1101", person_payload(population)) == errors.SYSTEM_BUSY
    faults.clear("1101")
    assert (await session.post(session.body("1101", person_payload(population)))).status_code == 503
    faults.clear()
    assert (await session.call("1101", person_payload(population)))["infcode"] == 0


def test_command_line_form() -> None:
    assert parse("2207:commit-then-drop") == ("2207", Fault(FaultKind.COMMIT_THEN_DROP))
    assert parse("2207:commit-then-drop:1") == ("2207", Fault(FaultKind.COMMIT_THEN_DROP, times=1))
    assert parse("1101:latency=0.5") == ("1101", Fault(FaultKind.LATENCY, seconds=0.5))
    assert parse("*:http-5xx=502:3") == ("*", Fault(FaultKind.HTTP_5XX, status=502, times=3))
    assert parse("2501A:refuse=系统维护") == ("2501A", Fault(FaultKind.REFUSE, err_msg="系统维护"))
    assert parse("2207:timeout=999")[1].delay == MAX_HOLD
    for bad in ("2207", "2207:explode", "2207:reset=1", "1101:latency=x", "1101:http-5xx=404",
                "1101:latency=0.5:0", ":reset", "1101:latency="):  # fmt: skip
        with pytest.raises(ValueError):  # noqa: PT011 - the message varies by problem
            parse(bad)


def test_take_counts_down() -> None:
    faults = Faults()
    faults.set("2207", Fault(FaultKind.RESET, times=2))
    assert faults.take("2207") is not None
    assert faults.get("2207") == Fault(FaultKind.RESET, times=1)
    assert faults.take("2207") is not None
    assert faults.take("2207") is None
    assert faults.take("1101") is None


def _plain(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with its amounts as strings, for httpx's own JSON encoder."""
    return json.loads(json.dumps(body, default=str))


async def test_a_held_request_does_not_delay_shutdown(
    pki: DevPki, population: Population, client: httpx.AsyncClient, envelope: EnvelopeFactory
) -> None:
    app = PlatformSimulator(population)
    app.faults.set("9001", Fault(FaultKind.TIMEOUT, seconds=60))
    async with running_simulator(app, pki=pki) as simulator:
        held = asyncio.create_task(
            client.post(simulator.endpoint, json=envelope("9001", sign_in_input()))
        )
        await asyncio.sleep(0.3)
        started = time.monotonic()
    assert time.monotonic() - started < 5
    with pytest.raises(httpx.TransportError):
        await held

"""A store blip while 2207 is in flight does not turn a payment into a refund.

The simulator holds the 2207 answer (``latency``); the store goes away for real while it is held
(PostgreSQL: the test's own database closed to connections and its backends terminated; SQLite:
the write lock held by another connection) and comes back a few seconds later. The write that
records the answer is retried within the caller's deadline, so the caller gets its settlement and
the platform's ledger one standing charge, never a reversal. When the outage outlasts the
deadline, the caller is told the settlement is PENDING and the row is reversed later by the
resolver: one charge, undone, never two.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from sidecar._proto.yibao.gateway.v1 import gateway_pb2 as gateway
from sidecar._proto.yibao.gateway.v1 import gateway_pb2_grpc as gateway_grpc
from sidecar.config import StoreConfig
from sidecar.store import open_store
from tests.integration.conftest import TENANT_METADATA
from tests.integration.database_outage import BACKENDS, Outage, store_outage
from tests.integration.settlement_support import (
    assert_at_most_one_charge_per_request,
    charges_by_settlement,
    consenting_sidecar,
    recorded_msgids,
    settle_request,
    settlement_settings,
)
from tests.integration.test_gateway import details, subject_of
from yibao_devkit.simulator.faults import Fault, FaultKind
from yibao_devkit.simulator.population import Person
from yibao_devkit.simulator.server import RunningSimulator

HOLD_2207 = 1.5  # the simulator holds the 2207 answer this long; the outage starts meanwhile
OUTAGE = 3.0  # seconds the store is away: it is still away when the answer arrives


@pytest.fixture(params=BACKENDS)
async def outage(request: pytest.FixtureRequest, short_dir: Path) -> Outage:
    async with store_outage(request.param, short_dir) as switch:
        yield switch  # type: ignore[misc]


@pytest.fixture
def employee(simulator: RunningSimulator) -> Person:
    return simulator.app.population.examples().employee


async def store_state(config: StoreConfig, request_id: str) -> str:
    opened = open_store(config)
    try:
        async with opened.transaction() as tx:
            row = await tx.fetch_one(
                "SELECT state FROM settlement_records WHERE request_id = :r", {"r": request_id}
            )
    finally:
        await opened.close()
    assert row is not None
    return str(row["state"])


async def in_flight(simulator: RunningSimulator) -> None:
    """Return once the simulator holds a 2207 (its msgid is in the store by then)."""
    while simulator.app.calls.count("2207") < 1:
        await asyncio.sleep(0.01)


@pytest.mark.slow
async def test_a_store_blip_while_2207_is_in_flight_still_settles_once(
    simulator: RunningSimulator,
    short_dir: Path,
    outage: Outage,
    employee: Person,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = simulator.app
    settings = settlement_settings(simulator, short_dir, outage.config)
    caplog.set_level("WARNING", logger="sidecar.settlement")
    async with consenting_sidecar(settings, app) as running:
        stub = gateway_grpc.InsuranceGatewayStub(running.channel)
        request = settle_request(employee, app.issue_ec_token(employee.certno), "blip")
        app.faults.set("2207", Fault(FaultKind.LATENCY, times=1, seconds=HOLD_2207))
        call = asyncio.ensure_future(
            stub.SettleWithEVoucher(request, metadata=TENANT_METADATA, timeout=30)
        )
        await in_flight(simulator)
        await outage.cut()
        await asyncio.sleep(OUTAGE)
        assert not call.done()  # the answer came while the store was away; the call waits
        await outage.restore()
        answer = await call
    assert answer.settlement.state == gateway.SETTLEMENT_STATE_SETTLED
    assert answer.settlement.settlement_id
    retries = [r for r in caplog.records if r.getMessage() == "settlement.store_retry"]
    assert retries, "the outage never reached the state write"
    assert charges_by_settlement(app, employee.psn_no or "") == (1, 1)
    assert app.calls.count("2207") == 1 and app.calls.count("2601") == 0
    assert await store_state(outage.config, "blip") == "settled"
    assert_at_most_one_charge_per_request(app, await recorded_msgids(outage.config))


@pytest.mark.slow
async def test_an_outage_longer_than_the_deadline_answers_pending_and_is_reversed_once(
    simulator: RunningSimulator, short_dir: Path, outage: Outage, employee: Person
) -> None:
    app = simulator.app
    settings = settlement_settings(simulator, short_dir, outage.config)
    async with consenting_sidecar(settings, app) as running:
        stub = gateway_grpc.InsuranceGatewayStub(running.channel)
        request = settle_request(employee, app.issue_ec_token(employee.certno), "long")
        app.faults.set("2207", Fault(FaultKind.LATENCY, times=1, seconds=1.0))
        call = asyncio.ensure_future(
            stub.SettleWithEVoucher(request, metadata=TENANT_METADATA, timeout=4)
        )
        await in_flight(simulator)
        await outage.cut()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        await outage.restore()
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert details(caught.value)[0].reason == "STORE_UNAVAILABLE"
        assert "PENDING" in (caught.value.details() or "")
        assert charges_by_settlement(app, employee.psn_no or "") == (1, 1)  # charged, unrecorded

        # The row was left SENDING; once the lease is over the resolver reverses it (2601).
        lookup = gateway.GetSettlementRequest(
            subject=subject_of(employee), original_request_id="long"
        )
        state = gateway.SETTLEMENT_STATE_PENDING
        for _ in range(400):  # the sidecar's pool reconnects with backoff: UNAVAILABLE first
            try:
                found = await stub.GetSettlement(lookup, metadata=TENANT_METADATA)
                state = found.settlement.state
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
            if state != gateway.SETTLEMENT_STATE_PENDING:
                break
            await asyncio.sleep(0.05)
        assert state == gateway.SETTLEMENT_STATE_REVERSED
        again = await stub.SettleWithEVoucher(request, metadata=TENANT_METADATA, timeout=10)
        assert again.settlement.state == gateway.SETTLEMENT_STATE_REVERSED
    assert charges_by_settlement(app, employee.psn_no or "") == (1, 0)
    assert app.calls.count("2207") == 1
    assert await store_state(outage.config, "long") == "reversed"
    assert_at_most_one_charge_per_request(app, await recorded_msgids(outage.config))

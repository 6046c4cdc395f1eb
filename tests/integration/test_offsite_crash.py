"""A sidecar killed (SIGKILL) while 2501 is in flight: after restart, a repeat of the same
request_id resolves what was sent with 5304 instead of registering twice."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import grpc
import pytest

from sidecar._proto.yibao.gateway.v1 import gateway_pb2_grpc as gateway_grpc
from tests.integration.conftest import TENANT_METADATA
from tests.integration.consent_support import consent_to
from tests.integration.functions_support import submission
from tests.integration.test_server import sidecar_process, wait_serving, write_config
from yibao_devkit.simulator.faults import Fault, FaultKind
from yibao_devkit.simulator.population import Population
from yibao_devkit.simulator.server import RunningSimulator

LEASE = 2.0


def config(tmp_path: Path, simulator: RunningSimulator, socket_dir: Path, slot: int) -> Path:
    path = write_config(tmp_path / f"sidecar-{slot}.toml", simulator, socket_dir)
    path.write_text(
        path.read_text()
        + f"\n[platform.msgid]\nslots = 2\nslot = {slot}\n"
        + f"\n[offsite]\nrequest_lease_seconds = {LEASE}\nunknown_outcome_settle_seconds = 60\n"
    )
    return path


@pytest.mark.slow
async def test_a_killed_sidecar_leaves_a_key_that_the_next_one_resolves(
    simulator: RunningSimulator, population: Population, short_dir: Path, tmp_path: Path
) -> None:
    person = population.examples().employee
    request = submission(person)
    socket = f"unix:{short_dir / 'sidecar.sock'}"
    simulator.app.faults.set("2501", Fault(FaultKind.LATENCY, times=1, seconds=2.0))
    first = sidecar_process(config(tmp_path, simulator, short_dir, 0))
    try:
        async with grpc.aio.insecure_channel(socket) as channel:
            await wait_serving(channel, first)
            await consent_to(channel, [request.subject])  # in the store: the second sees it
            stub = gateway_grpc.InsuranceGatewayStub(channel)
            call = asyncio.ensure_future(
                stub.SubmitOffsiteRegistration(request, metadata=TENANT_METADATA, timeout=10)
            )
            for _ in range(100):
                if simulator.app.calls.count("2501"):
                    break
                await asyncio.sleep(0.05)
            first.send_signal(signal.SIGKILL)  # 2501 is in flight
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        first.kill()
        first.communicate(timeout=30)
    await asyncio.sleep(LEASE + 0.5)  # the dead holder's lease runs out; 2501 was performed
    second = sidecar_process(config(tmp_path, simulator, short_dir, 1))
    try:
        async with grpc.aio.insecure_channel(socket) as channel:
            await wait_serving(channel, second)
            stub = gateway_grpc.InsuranceGatewayStub(channel)
            answer = await stub.SubmitOffsiteRegistration(
                request, metadata=TENANT_METADATA, timeout=10
            )
            assert answer.registration.registration_id
            again = await stub.SubmitOffsiteRegistration(
                request, metadata=TENANT_METADATA, timeout=10
            )
            assert again == answer
    finally:
        second.send_signal(signal.SIGTERM)
        _, stderr = second.communicate(timeout=30)
    assert second.returncode == 0, stderr
    assert simulator.app.calls.count("2501") == 1
    assert simulator.app.calls.count("5304") == 1
    assert len(simulator.app.state.registrations.of(person.psn_no or "")) == 1

"""``serve`` on either event loop ([server] event_loop): the whole sidecar works on each.

The sidecar runs as its own process (``python -m sidecar serve``), so the loop is the one the
command chose: the peer-credential front accepting on the socket (its transports are the loop's),
grpc.aio's server, the filter chain with access control and the consent gate and its store, the
platform call through libcurl over HTTP/2 and HTTP/1.1 (curl drives its sockets through the loop's
readers and writers), and the drain on SIGTERM.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import grpc
import pytest

from sidecar._proto.yibao.gateway.v1 import gateway_pb2 as gateway
from sidecar._proto.yibao.gateway.v1 import gateway_pb2_grpc as gateway_grpc
from tests.integration.conftest import TENANT_METADATA
from tests.integration.consent_support import consent_to
from tests.integration.test_gateway import subject_of
from tests.integration.test_server import sidecar_process, wait_serving, write_config
from yibao_devkit.simulator.population import Population
from yibao_devkit.simulator.server import RunningSimulator


def loaded_libraries(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("http2", ["1", "0"])
@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
async def test_the_sidecar_serves_and_drains_on_each_event_loop(
    loop: str,
    http2: str,
    simulator: RunningSimulator,
    population: Population,
    short_dir: Path,
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path / "sidecar.toml", simulator, short_dir, f'event_loop = "{loop}"')
    policy = tmp_path / "access.toml"
    policy.write_text(
        f'[[caller]]\nname = "im"\nunix_uids = [{os.getuid()}]\ntenants = ["*"]\nrpcs = ["*"]\n'
    )
    with config.open("a") as toml:
        toml.write(f'\n[access]\npolicy_file = "{policy}"\nprivate_socket_parent = "{short_dir}"\n')
    env = {"YIBAO_SIDECAR__PLATFORM__HTTP2": http2}
    process = sidecar_process(config, env)
    people = [population.examples().employee, population.examples().resident]
    try:
        async with grpc.aio.insecure_channel(f"unix:{short_dir / 'sidecar.sock'}") as channel:
            await wait_serving(channel, process)
            assert ("uvloop" in loaded_libraries(process.pid)) == (loop == "uvloop")
            await consent_to(channel, [subject_of(p) for p in people])
            stub = gateway_grpc.InsuranceGatewayStub(channel)
            for person in people * 3:
                answer = await stub.GetEnrollment(
                    gateway.GetEnrollmentRequest(subject=subject_of(person)),
                    metadata=TENANT_METADATA,
                    timeout=20,
                )
                assert answer.person.certificate_number == person.certno
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert '"access_control": true' in stderr  # the calls above went through the front
    assert '"level": "error"' not in stderr, stderr

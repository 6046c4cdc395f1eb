"""The server itself: the whole contract answers, health, reflection, limits, graceful drain."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from sidecar._proto.yibao.gateway.v1 import common_pb2 as common
from sidecar._proto.yibao.gateway.v1 import consent_pb2, gateway_pb2
from sidecar._proto.yibao.gateway.v1 import gateway_pb2_grpc as gateway_grpc
from tests.integration.conftest import (
    TENANT_METADATA,
    RunningSidecar,
    running_sidecar,
    settings_for,
)
from tests.integration.consent_support import consent_to
from yibao_devkit.simulator.app import PlatformSimulator
from yibao_devkit.simulator.population import Population
from yibao_devkit.simulator.server import RunningSimulator, running_simulator

GATEWAY = gateway_pb2.DESCRIPTOR.services_by_name["InsuranceGateway"]
CONSENT = consent_pb2.DESCRIPTOR.services_by_name["ConsentService"]


IMPLEMENTED = {"GetEnrollment", "CheckEligibility"}
IMPLEMENTED |= {"SettleWithEVoucher", "GetSettlement", "CancelSettlement"}
IMPLEMENTED |= {"GetAccount", "SubmitOffsiteRegistration", "ListOffsiteRegistrations"}
IMPLEMENTED |= {"CancelOffsiteRegistration"}
IMPLEMENTED |= {m.name for m in CONSENT.methods}


def request_for(method: Any) -> Any:
    return message_factory.GetMessageClass(method.input_type)()


@pytest.mark.parametrize("method", [*GATEWAY.methods, *CONSENT.methods], ids=lambda m: m.name)
async def test_every_rpc_of_the_contract_answers(sidecar: RunningSidecar, method: Any) -> None:
    call = sidecar.channel.unary_unary(
        f"/{method.containing_service.full_name}/{method.name}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=lambda b: b,
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(request_for(method), metadata=TENANT_METADATA, timeout=5)
    if method.name in IMPLEMENTED:
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # empty request
    else:
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert method.name in (caught.value.details() or "")


def test_every_gateway_rpc_names_its_purpose() -> None:
    for method in GATEWAY.methods:
        purpose = method.GetOptions().Extensions[gateway_pb2.required_purpose]
        assert purpose != common.PURPOSE_UNSPECIFIED, method.name


async def test_health_reports_serving_for_the_server_and_each_service(
    sidecar: RunningSidecar,
) -> None:
    health = health_pb2_grpc.HealthStub(sidecar.channel)
    for service in ("", GATEWAY.full_name, CONSENT.full_name):
        answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_health_needs_no_caller_metadata_and_reflection_lists_services(
    sidecar: RunningSidecar,
) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(sidecar.channel)
    answers = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = set()
    async for answer in answers:
        names |= {s.name for s in answer.list_services_response.service}
    assert {GATEWAY.full_name, CONSENT.full_name, "grpc.health.v1.Health"} <= names


async def test_oversized_message_is_refused_by_the_server(
    simulator: RunningSimulator, short_dir: Path
) -> None:
    settings = settings_for(simulator, short_dir, max_message_bytes=4096)
    async with running_sidecar(settings) as running:
        stub = gateway_grpc.InsuranceGatewayStub(running.channel)
        request = gateway_pb2.GetEnrollmentRequest(subject=common.DataSubject(name="名" * 5000))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetEnrollment(request, metadata=TENANT_METADATA)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert simulator.app.calls.total == 0


class SlowSimulator(PlatformSimulator):
    """The simulator with a fixed delay before every answer."""

    delay = 0.6

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await asyncio.sleep(self.delay)
        await super().__call__(scope, receive, send)


def enrollment_request(population: Population) -> gateway_pb2.GetEnrollmentRequest:
    person = population.examples().employee
    return gateway_pb2.GetEnrollmentRequest(
        subject=common.DataSubject(
            certificate_type=common.CERTIFICATE_TYPE_RESIDENT_ID_CARD,
            certificate_number=person.certno,
            name=person.psn_name,
        )
    )


@pytest.mark.slow
async def test_shutdown_drains_calls_in_flight_and_refuses_new_ones(short_dir: Path) -> None:
    app = SlowSimulator(Population.generate(7, 20))
    async with running_simulator(app) as simulator:
        settings = settings_for(simulator, short_dir, grace_period_seconds=10)
        async with running_sidecar(settings) as running:
            stub = gateway_grpc.InsuranceGatewayStub(running.channel)
            request = enrollment_request(app.population)
            await consent_to(running.channel, [request.subject])
            await stub.GetEnrollment(request, metadata=TENANT_METADATA)  # sign in first
            in_flight = [
                asyncio.ensure_future(stub.GetEnrollment(request, metadata=TENANT_METADATA))
                for _ in range(30)
            ]
            while app.calls.count("1101") < 31:  # all 30 reached the platform and wait there
                await asyncio.sleep(0.01)
            stopping = asyncio.create_task(running.sidecar.server.stop())
            await asyncio.sleep(0.1)
            health = health_pb2_grpc.HealthStub(running.channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            answers = await asyncio.gather(*in_flight)
            assert all(a.person.name == request.subject.name for a in answers)
            await stopping


@pytest.mark.slow
async def test_calls_beyond_the_grace_period_are_cancelled(short_dir: Path) -> None:
    app = SlowSimulator(Population.generate(7, 20))
    app.delay = 5.0
    async with running_simulator(app) as simulator:
        settings = settings_for(simulator, short_dir, grace_period_seconds=0.3)
        async with running_sidecar(settings) as running:
            stub = gateway_grpc.InsuranceGatewayStub(running.channel)
            await consent_to(running.channel, [enrollment_request(app.population).subject])
            call = asyncio.ensure_future(
                stub.GetEnrollment(enrollment_request(app.population), metadata=TENANT_METADATA)
            )
            while app.calls.total < 1:
                await asyncio.sleep(0.01)
            started = time.monotonic()
            await running.sidecar.server.stop()
            assert time.monotonic() - started < 3
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)


async def wait_serving(
    channel: grpc.aio.Channel, process: subprocess.Popen[str]
) -> health_pb2.HealthCheckResponse:
    """Poll a sidecar process's health until it answers; fail at once if the process exits."""
    health = health_pb2_grpc.HealthStub(channel)
    for _ in range(100):
        if process.poll() is not None:
            pytest.fail(f"the sidecar exited: {process.communicate()[1]}")
        try:
            return await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.1)
    pytest.fail("the sidecar did not answer its health check within 10 s")


def sidecar_process(config: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sidecar", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def write_config(
    path: Path, simulator: RunningSimulator, socket_dir: Path, extra: str = ""
) -> Path:
    settings = settings_for(simulator, socket_dir)
    path.write_text(
        f"""
[server]
socket_path = "{settings.server.socket_path}"
grace_period_seconds = 5
{extra}
[institution]
code = "{settings.institution.code}"
name = "测试机构"
division = "{settings.institution.division}"

[platform]
url = "{settings.platform.url}"
ca_file = "{settings.platform.ca_file}"
client_cert_file = "{settings.platform.client_cert_file}"
client_key_file = "{settings.platform.client_key_file}"

[store]
sqlite_path = "{settings.store.sqlite_path}"

[consent]
pseudonym_key_file = "{settings.consent.pseudonym_key_file}"
"""
    )
    return path


@pytest.mark.slow
async def test_sigterm_stops_the_process_cleanly_and_logs_are_json_without_personal_data(
    simulator: RunningSimulator, short_dir: Path, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "sidecar.toml", simulator, short_dir)
    process = sidecar_process(config)
    socket_path = short_dir / "sidecar.sock"
    try:
        async with grpc.aio.insecure_channel(f"unix:{socket_path}") as channel:
            await wait_serving(channel, process)
            stub = gateway_grpc.InsuranceGatewayStub(channel)
            request = enrollment_request(simulator.app.population)
            await consent_to(channel, [request.subject])
            await stub.GetEnrollment(request, metadata=TENANT_METADATA)
        assert oct(socket_path.stat().st_mode & 0o777) == "0o660"
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0
    events = [json.loads(line) for line in stderr.splitlines()]
    names = [e["event"] for e in events]
    assert {"server.started", "rpc", "server.draining", "server.stopped"} <= set(names)
    rpc = next(e for e in events if e["event"] == "rpc" and e["method"] == "GetEnrollment")
    assert (
        rpc["method"] == "GetEnrollment" and rpc["status"] == "OK" and rpc["tenant"] == "acme-corp"
    )
    assert request.subject.certificate_number not in stderr
    assert request.subject.name not in stderr
    assert not socket_path.exists()


@pytest.mark.parametrize(
    ("extra", "env", "expected"),
    [
        ("max_message_bytes = 'lots'", {}, "config: server.max_message_bytes"),
        (
            "",
            {"YIBAO_SIDECAR__SERVER__GRACE_PERIOD_SECONDS": "-1"},
            "config: server.grace_period_seconds",
        ),
        ("socket_typo = 1", {}, "config: server.socket_typo"),
    ],
)
async def test_bad_configuration_stops_start_up_with_one_line(
    simulator: RunningSimulator,
    short_dir: Path,
    tmp_path: Path,
    extra: str,
    env: dict[str, str],
    expected: str,
) -> None:
    config = write_config(tmp_path / "sidecar.toml", simulator, short_dir, extra)
    process = sidecar_process(config, env)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 2
    assert stdout == ""
    assert len(stderr.splitlines()) == 1
    assert stderr.startswith(expected)


async def test_missing_certificate_file_names_the_key(
    simulator: RunningSimulator, short_dir: Path, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "sidecar.toml", simulator, short_dir)
    config.write_text(config.read_text().replace(str(simulator.pki.ca_cert), "/nonexistent/ca.pem"))
    process = sidecar_process(config)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 2
    assert stderr.strip() == "config: platform.ca_file: /nonexistent/ca.pem is not a readable file"


async def test_optional_loopback_tcp_listener(simulator: RunningSimulator, short_dir: Path) -> None:
    settings = settings_for(
        simulator, short_dir, tcp_listen="127.0.0.1:0", tcp_plaintext_for_development=True
    )
    async with running_sidecar(settings) as running:
        port = running.sidecar.server.tcp_port
        assert port
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as tcp:
            answer = await health_pb2_grpc.HealthStub(tcp).Check(health_pb2.HealthCheckRequest())
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_stale_socket_is_replaced_but_a_regular_file_is_not(
    simulator: RunningSimulator, short_dir: Path
) -> None:
    import socket as socket_module

    path = short_dir / "sidecar.sock"
    stale = socket_module.socket(socket_module.AF_UNIX)
    stale.bind(str(path))
    stale.close()
    async with running_sidecar(settings_for(simulator, short_dir)) as running:
        answer = await health_pb2_grpc.HealthStub(running.channel).Check(
            health_pb2.HealthCheckRequest()
        )
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    path.write_text("not a socket")
    with pytest.raises(FileExistsError, match="is not a socket"):
        async with running_sidecar(settings_for(simulator, short_dir)):
            pass
    assert path.read_text() == "not a socket"


async def test_an_unusable_socket_path_stops_start_up_with_one_line(
    simulator: RunningSimulator, short_dir: Path, tmp_path: Path
) -> None:
    (short_dir / "sidecar.sock").write_text("someone else's file")
    config = write_config(tmp_path / "sidecar.toml", simulator, short_dir)
    process = sidecar_process(config)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 1
    assert len(stderr.splitlines()) == 1
    assert stderr.startswith("yibao-sidecar: cannot start:")
    assert "is not a socket" in stderr.splitlines()[-1]


@pytest.mark.slow
async def test_a_second_sidecar_on_a_live_socket_refuses_and_leaves_the_first_serving(
    simulator: RunningSimulator, short_dir: Path, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "sidecar.toml", simulator, short_dir)
    socket_path = short_dir / "sidecar.sock"
    first = sidecar_process(config)
    try:
        async with grpc.aio.insecure_channel(f"unix:{socket_path}") as channel:
            await wait_serving(channel, first)
            inode = socket_path.stat().st_ino
            own_store = {"YIBAO_SIDECAR__STORE__SQLITE_PATH": str(tmp_path / "second" / "s.db")}
            second = sidecar_process(config, own_store)
            _, stderr = second.communicate(timeout=30)
            assert second.returncode == 1
            assert stderr.splitlines() == [
                f"yibao-sidecar: cannot start: {socket_path}: another process is listening on "
                "it (a second sidecar?); stop it or set a different server.socket_path"
            ]
            assert socket_path.stat().st_ino == inode  # not unlinked and re-bound
            answer = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=20)
    assert first.returncode == 0


async def test_an_unusable_store_stops_start_up_with_one_line(
    simulator: RunningSimulator, short_dir: Path, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "sidecar.toml", simulator, short_dir)
    (short_dir / "store").write_text("a file where the store's directory should be")
    process = sidecar_process(config)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 1
    assert stderr.splitlines() == [
        f"yibao-sidecar: cannot start: store: cannot open SQLite database "
        f"{short_dir / 'store' / 'sidecar.db'}: File exists"
    ]
    assert not (short_dir / "sidecar.sock").exists()

"""The link to the platform: sign-in renewal, sign-out, and each way the tunnel can fail."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import grpc
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sidecar._proto.yibao.gateway.v1 import gateway_pb2
from sidecar._proto.yibao.gateway.v1 import gateway_pb2_grpc as gateway_grpc
from sidecar.config import Settings
from sidecar.observability import telemetry
from tests.integration import conftest
from tests.integration.conftest import TENANT_METADATA, RunningSidecar, running_sidecar
from tests.integration.consent_support import consent_to
from tests.integration.test_gateway import call_enrollment, details, subject_of
from tests.integration.test_server import SlowSimulator
from yibao_devkit.simulator.population import Population
from yibao_devkit.simulator.server import RunningSimulator, running_simulator

HTTP2: list[bool] = [True]


@pytest.fixture(autouse=True, params=[True, False], ids=["http2", "http1.1"])
def http2(request: pytest.FixtureRequest) -> bool:
    """Every sidecar built here by ``settings_for`` runs over both HTTP versions of the tunnel."""
    HTTP2[:] = [bool(request.param)]
    return bool(request.param)


def settings_for(simulator: RunningSimulator, socket_dir: Path) -> Settings:
    settings = conftest.settings_for(simulator, socket_dir)
    platform = settings.platform.model_copy(update={"http2": HTTP2[0]})
    return settings.model_copy(update={"platform": platform})


async def test_expired_sign_in_is_renewed_once_and_the_call_succeeds(
    sidecar: RunningSidecar, population: Population, simulator: RunningSimulator
) -> None:
    subject = subject_of(population.examples().employee)
    await call_enrollment(sidecar, subject)
    simulator.app.sign_ins.invalidate_all()
    answer = await call_enrollment(sidecar, subject)
    assert answer.person.name == subject.name
    assert simulator.app.calls.count("9001") == 2
    assert simulator.app.calls.count("1101") == 3  # one refused for the stale sign-in, retried once


async def test_operators_sign_in_separately_and_sign_out_on_close(
    simulator: RunningSimulator, population: Population, short_dir: Path
) -> None:
    subject = subject_of(population.examples().employee)
    other = (("x-yibao-tenant", "t"), ("x-yibao-operator", "op-2"))
    async with running_sidecar(settings_for(simulator, short_dir)) as running:
        await consent_to(running.channel, [subject])
        await consent_to(running.channel, [subject], metadata=other)  # consent is per tenant
        await call_enrollment(running, subject)
        await call_enrollment(running, subject, other)
        assert simulator.app.calls.count("9001") == 2
        assert simulator.app.sign_ins.current("im-bot-01") is not None
    assert simulator.app.calls.count("9002") == 2
    assert simulator.app.sign_ins.current("im-bot-01") is None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_unreachable_platform_is_unavailable_with_a_retry_hint(
    simulator: RunningSimulator, population: Population, short_dir: Path
) -> None:
    settings = settings_for(simulator, short_dir)
    settings = settings.model_copy(
        update={
            "platform": settings.platform.model_copy(
                update={"url": f"https://127.0.0.1:{free_port()}"}
            )
        }
    )
    async with running_sidecar(settings) as running:
        await consent_to(running.channel, [subject_of(population.examples().employee)])
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call_enrollment(running, subject_of(population.examples().employee))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert details(caught.value)[0].reason == "PLATFORM_UNAVAILABLE"


@pytest.mark.slow
async def test_slow_platform_is_deadline_exceeded(short_dir: Path) -> None:
    app = SlowSimulator(Population.generate(3, 10))
    app.delay = 3.0
    async with running_simulator(app) as simulator:
        settings = settings_for(simulator, short_dir)
        settings = settings.model_copy(
            update={"platform": settings.platform.model_copy(update={"timeout_seconds": 0.5})}
        )
        async with running_sidecar(settings) as running:
            await consent_to(running.channel, [subject_of(app.population.examples().employee)])
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call_enrollment(running, subject_of(app.population.examples().employee))
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert details(caught.value)[0].reason == "PLATFORM_TIMEOUT"


@pytest.mark.parametrize("which", ["foreign client certificate", "untrusted server"])
async def test_tls_that_is_not_mutually_trusted_never_reaches_the_platform(
    simulator: RunningSimulator, population: Population, short_dir: Path, which: str
) -> None:
    settings = settings_for(simulator, short_dir)
    pki = simulator.pki
    if which == "foreign client certificate":
        changes = {
            "client_cert_file": pki.other_client_cert,
            "client_key_file": pki.other_client_key,
        }
    else:
        changes = {"ca_file": pki.other_ca_cert}
    settings = settings.model_copy(
        update={"platform": settings.platform.model_copy(update=changes)}
    )
    async with running_sidecar(settings) as running:
        await consent_to(running.channel, [subject_of(population.examples().employee)])
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call_enrollment(running, subject_of(population.examples().employee))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert simulator.app.calls.total == 0


@pytest.mark.slow
async def test_the_callers_deadline_bounds_the_platform_call(short_dir: Path) -> None:
    exporter = InMemorySpanExporter()
    observability = telemetry.build(exporter, synchronous=True)
    app = SlowSimulator(Population.generate(3, 10))
    subject = subject_of(app.population.examples().employee)
    async with (
        running_simulator(app) as simulator,
        running_sidecar(settings_for(simulator, short_dir), observability) as running,
    ):
        app.delay = 0.0
        await consent_to(running.channel, [subject])
        await call_enrollment(running, subject)  # signs in
        app.delay = 4.5  # inside the 5 s platform timeout, far beyond the caller's deadline
        stub = gateway_grpc.InsuranceGatewayStub(running.channel)
        request = gateway_pb2.GetEnrollmentRequest(subject=subject)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetEnrollment(request, metadata=TENANT_METADATA, timeout=0.5)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await asyncio.sleep(0.2)
    platform_calls = [s for s in exporter.get_finished_spans() if s.name == "platform 1101"]
    assert len(platform_calls) == 2
    slow = platform_calls[-1]
    assert slow.end_time is not None and slow.start_time is not None
    assert (slow.end_time - slow.start_time) / 1e9 < 2.5  # abandoned at the deadline, not at 4.5 s


async def test_answers_from_a_platform_clock_far_off_are_refused(short_dir: Path) -> None:
    import datetime as dt

    from sidecar.platform.envelope import beijing_now
    from yibao_devkit.simulator.app import PlatformSimulator

    app = PlatformSimulator(
        Population.generate(5, 10), clock=lambda: beijing_now() - dt.timedelta(hours=1)
    )
    async with (
        running_simulator(app) as simulator,
        running_sidecar(settings_for(simulator, short_dir)) as running,
    ):
        await consent_to(running.channel, [subject_of(app.population.examples().employee)])
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call_enrollment(running, subject_of(app.population.examples().employee))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "stale answer to 9001: respond_time is outside the freshness window" in (
        caught.value.details() or ""
    )


async def test_a_platform_certificate_for_another_name_is_refused(
    short_dir: Path, tmp_path: Path
) -> None:
    from yibao_devkit import devcerts

    pki = devcerts.generate(tmp_path / "pki", server_names=("gateway.other-region.invalid",))
    async with running_simulator(pki=pki, seed=5, population_size=10) as simulator:
        async with running_sidecar(settings_for(simulator, short_dir)) as running:
            subject = subject_of(simulator.app.population.examples().employee)
            await consent_to(running.channel, [subject])
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call_enrollment(running, subject)
        assert simulator.app.calls.total == 0
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "cannot connect to the platform" in (caught.value.details() or "")


async def test_an_oauth2_gateway_in_front_is_logged_in_to_and_again_after_401(
    short_dir: Path, tmp_path: Path
) -> None:
    from tests.conftest import write_secret
    from yibao_devkit.simulator.app import PlatformSimulator
    from yibao_devkit.simulator.gateway_login import OAuth2Gate

    gate = OAuth2Gate("im-gateway", "client-secret-1", "yibao", "password-1")
    app = PlatformSimulator(Population.generate(5, 10), gateway_login=gate)
    async with running_simulator(app) as simulator:
        settings = settings_for(simulator, short_dir)
        login = {
            "scheme": "oauth2-password",
            "token_url": simulator.url.split("/fsi/")[0] + "/oauth/token",
            "client_id": "im-gateway",
            "client_secret_file": write_secret(tmp_path / "client.secret", "client-secret-1"),
            "username": "yibao",
            "password_file": write_secret(tmp_path / "password", "password-1"),
        }
        platform = settings.platform.model_validate(
            {**settings.platform.model_dump(), "gateway_login": login}
        )
        settings = settings.model_copy(update={"platform": platform})
        async with running_sidecar(settings) as running:
            subject = subject_of(app.population.examples().employee)
            await consent_to(running.channel, [subject])  # kept in the store for the next sidecar
            await call_enrollment(running, subject)
            await call_enrollment(running, subject)
            assert gate.issued == 1  # one token for both calls
            gate.expire_all()
            await call_enrollment(running, subject)
            assert gate.issued == 2  # refused with 401, logged in again, resent once

        wrong = {**login, "password_file": write_secret(tmp_path / "wrong", "nope")}
        platform = settings.platform.model_validate(
            {**settings.platform.model_dump(), "gateway_login": wrong}
        )
        async with running_sidecar(settings.model_copy(update={"platform": platform})) as running:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call_enrollment(running, subject)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "gateway login failed: the token endpoint answered HTTP 400" in (
        caught.value.details() or ""
    )


@pytest.mark.parametrize("pinned", [True, False])
async def test_a_pinned_gateway_key_is_required_before_anything_is_sent(
    simulator: RunningSimulator, population: Population, short_dir: Path, pinned: bool
) -> None:
    from cryptography import x509 as x509_module
    from cryptography.hazmat.primitives.serialization import Encoding

    from sidecar.platform.pinning import spki_sha256

    server_der = x509_module.load_pem_x509_certificate(
        simulator.pki.server_cert.read_bytes()
    ).public_bytes(Encoding.DER)
    other = spki_sha256(
        x509_module.load_pem_x509_certificate(simulator.pki.ca_cert.read_bytes()).public_bytes(
            Encoding.DER
        )
    )
    pins = (other, spki_sha256(server_der)) if pinned else (other,)
    settings = settings_for(simulator, short_dir)
    settings = settings.model_copy(
        update={"platform": settings.platform.model_copy(update={"pinned_server_keys": pins})}
    )
    async with running_sidecar(settings) as running:
        subject = subject_of(population.examples().employee)
        await consent_to(running.channel, [subject])
        if pinned:
            answer = await call_enrollment(running, subject)
            assert answer.person.name == subject.name
            return
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call_enrollment(running, subject)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "not one of the pinned keys" in (caught.value.details() or "")
    assert simulator.app.calls.total == 0

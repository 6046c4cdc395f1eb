"""The probes' three service names follow their checks; the health port offers nothing else.

The checks are stand-ins here (flags the test sets); the real ones are tested against SoftHSM
(tests/sidecar/serving/test_probe_login.py) and the simulator (tests/integration/test_probes.py).
The health service itself is real: each status is read the way the kubelet reads it, over gRPC.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from sidecar.config import ServerConfig
from sidecar.platform.transport import TransportError, TransportTimeout
from sidecar.serving.probes import LIVENESS, READINESS, STARTUP, Probes, TunnelCheck

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class Flags:
    hsm: bool = True
    platform: bool = True

    async def hsm_check(self) -> bool:
        return self.hsm

    async def platform_check(self) -> bool:
        return self.platform


@dataclass
class Running:
    probes: Probes
    flags: Flags
    channel: grpc.aio.Channel
    reader: InMemoryMetricReader

    async def status(self, service: str) -> int:
        stub = health_pb2_grpc.HealthStub(self.channel)
        answer = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
        return int(answer.status)

    async def statuses(self) -> dict[str, int]:
        return {name: await self.status(name) for name in ("", STARTUP, READINESS, LIVENESS)}

    def gauges(self) -> dict[str, float]:
        data = self.reader.get_metrics_data()
        values: dict[str, float] = {}
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        values[metric.name] = point.value
        return values


async def running_probes(
    *, with_hsm: bool = True, readiness_includes_platform: bool = False
) -> AsyncIterator[Running]:
    flags = Flags()
    reader = InMemoryMetricReader()
    server = ServerConfig(
        health_listen="127.0.0.1:0",
        # the loop's first round runs at start; the tests drive later rounds
        health_check_interval_seconds=3600,
        readiness_includes_platform=readiness_includes_platform,
    )
    probes = Probes(
        server,
        hsm=flags.hsm_check if with_hsm else None,
        platform=flags.platform_check,
        meter=MeterProvider(metric_readers=[reader]).get_meter("test"),
    )
    flags.hsm = flags.platform = False  # the loop's first round must not pass start-up
    await probes.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{probes.port}") as channel:
            yield Running(probes, flags, channel, reader)
    finally:
        await probes.stop()


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    async for made in running_probes():
        yield made


async def test_before_the_checks_pass_only_liveness_serves(running: Running) -> None:
    await running.probes.check_once()
    assert await running.statuses() == {
        "": NOT_SERVING,
        STARTUP: NOT_SERVING,
        READINESS: NOT_SERVING,
        LIVENESS: SERVING,
    }


@pytest.mark.parametrize(("hsm", "platform"), [(False, True), (True, False)])
async def test_start_up_needs_both_the_hsm_login_and_the_platform(
    running: Running, hsm: bool, platform: bool
) -> None:
    running.flags.hsm, running.flags.platform = hsm, platform
    await running.probes.check_once()
    assert await running.status(STARTUP) == NOT_SERVING
    assert await running.status(READINESS) == NOT_SERVING


async def test_once_both_pass_startup_and_readiness_serve(running: Running) -> None:
    running.flags.hsm = running.flags.platform = True
    await running.probes.check_once()
    assert set((await running.statuses()).values()) == {SERVING}
    assert running.gauges() == {"yibao.hsm.logged_in": 1, "yibao.platform.reachable": 1}


async def test_a_lost_hsm_login_takes_readiness_away_until_it_is_back(running: Running) -> None:
    running.flags.hsm = running.flags.platform = True
    await running.probes.check_once()
    running.flags.hsm = False
    await running.probes.check_once()
    assert await running.status(READINESS) == NOT_SERVING
    assert await running.status(STARTUP) == SERVING  # start-up is passed once and for all
    assert await running.status(LIVENESS) == SERVING
    assert running.gauges()["yibao.hsm.logged_in"] == 0
    running.flags.hsm = True
    await running.probes.check_once()
    assert await running.status(READINESS) == SERVING


async def test_a_platform_outage_keeps_readiness_unless_configured(running: Running) -> None:
    """Every pod would go unready at once: the IM service would lose more than insurance."""
    running.flags.hsm = running.flags.platform = True
    await running.probes.check_once()
    running.flags.platform = False
    await running.probes.check_once()
    assert await running.status(READINESS) == SERVING
    assert running.gauges()["yibao.platform.reachable"] == 0


async def test_with_readiness_including_the_platform_an_outage_takes_readiness_away() -> None:
    async for running in running_probes(readiness_includes_platform=True):
        running.flags.hsm = running.flags.platform = True
        await running.probes.check_once()
        running.flags.platform = False
        await running.probes.check_once()
        assert await running.status(READINESS) == NOT_SERVING


async def test_without_an_hsm_the_platform_alone_decides_start_up() -> None:
    async for running in running_probes(with_hsm=False):
        running.flags.platform = True
        await running.probes.check_once()
        assert await running.status(STARTUP) == SERVING
        assert "yibao.hsm.logged_in" not in running.gauges()


async def test_draining_ends_readiness_for_good_but_not_liveness(running: Running) -> None:
    running.flags.hsm = running.flags.platform = True
    await running.probes.check_once()
    await running.probes.draining()
    await running.probes.check_once()  # a late round must not make it ready again
    assert await running.status(READINESS) == NOT_SERVING
    assert await running.status("") == NOT_SERVING
    assert await running.status(LIVENESS) == SERVING


async def test_the_health_port_serves_nothing_but_health(running: Running) -> None:
    for method in (
        "/yibao.gateway.v1.InsuranceGateway/GetEnrollment",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ):
        call = running.channel.unary_unary(method)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call(b"", timeout=2)
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED


@dataclass
class FakeTransport:
    answer: int | Exception

    async def probe(self, *, timeout: float) -> int:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@pytest.mark.parametrize(
    ("answer", "ok"),
    [
        (405, True),  # the endpoint refuses a GET: the gateway answered
        (401, True),  # an access gateway in front wants its token: it answered
        (502, False),
        (503, False),
        (TransportError("cannot connect", sent=False), False),
        (TransportTimeout("timed out", sent=False), False),
    ],
)
async def test_the_tunnel_check_counts_answers_below_500(answer: int | Exception, ok: bool) -> None:
    assert await TunnelCheck(FakeTransport(answer), timeout=1.0)() is ok

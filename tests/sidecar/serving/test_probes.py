"""The probes' three service names follow their checks; the health port offers nothing else.

The checks are stand-ins here (flags the test sets); the real ones are tested against SoftHSM
(tests/sidecar/serving/test_probe_login.py) and the simulator (tests/integration/test_probes.py).
The TLS key's record is the real ``KeyFaults`` on a fake clock; the tunnel that feeds it is tested
in tests/integration/test_tls_key_faults.py. The health service itself is real: each status is
read the way the kubelet reads it, over gRPC.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from sidecar.config import ServerConfig
from sidecar.platform.tls_key_faults import KeyFaults
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
class Clock:
    now: float = 500.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Running:
    probes: Probes
    flags: Flags
    channel: grpc.aio.Channel
    reader: InMemoryMetricReader
    faults: KeyFaults = field(default_factory=KeyFaults)

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
    *,
    with_hsm: bool = True,
    readiness_includes_platform: bool = False,
    tls_key: KeyFaults | None = None,
    tls_key_unusable_seconds: float = 30.0,
) -> AsyncIterator[Running]:
    flags = Flags()
    reader = InMemoryMetricReader()
    server = ServerConfig(
        health_listen="127.0.0.1:0",
        # the loop's first round runs at start; the tests drive later rounds
        health_check_interval_seconds=3600,
        readiness_includes_platform=readiness_includes_platform,
        tls_key_unusable_seconds=tls_key_unusable_seconds,
    )
    probes = Probes(
        server,
        hsm=flags.hsm_check if with_hsm else None,
        platform=flags.platform_check,
        tls_key=tls_key,
        meter=MeterProvider(metric_readers=[reader]).get_meter("test"),
    )
    flags.hsm = flags.platform = False  # the loop's first round must not pass start-up
    await probes.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{probes.port}") as channel:
            yield Running(probes, flags, channel, reader, tls_key or KeyFaults())
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


# -- the TLS key in the token ------------------------------------------------------------------
async def until(running: Running, service: str, wanted: int, seconds: float = 3.0) -> None:
    """Poll the health service until ``service`` is ``wanted`` (the probes' own loop acts)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await running.status(service) == wanted:
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"{service} never became {wanted} on its own")


async def started_with_tls_key(clock: Clock, **options: Any) -> AsyncIterator[Running]:
    async for running in running_probes(tls_key=KeyFaults(clock), **options):
        running.flags.hsm = running.flags.platform = True
        await running.probes.check_once()
        assert set((await running.statuses()).values()) == {SERVING}
        yield running


@pytest.mark.parametrize("readiness_includes_platform", [False, True])
async def test_a_tls_key_fault_takes_readiness_away_at_once_but_not_liveness(
    readiness_includes_platform: bool,
) -> None:
    """No round of checks in between: the tunnel's record alone moves readiness."""
    clock = Clock()
    async for running in started_with_tls_key(
        clock, readiness_includes_platform=readiness_includes_platform
    ):
        assert running.gauges()["yibao.tls_key.usable"] == 1
        running.faults.unusable("pkcs11", "Object handle invalid")
        await until(running, READINESS, NOT_SERVING)
        assert await running.status("") == NOT_SERVING
        assert await running.status(LIVENESS) == SERVING
        assert await running.status(STARTUP) == SERVING
        assert running.gauges()["yibao.tls_key.usable"] == 0
        await running.probes.check_once()  # the other checks pass: still not ready
        assert await running.status(READINESS) == NOT_SERVING


async def test_liveness_fails_once_the_fault_has_lasted_tls_key_unusable_seconds() -> None:
    clock = Clock()
    async for running in started_with_tls_key(clock, tls_key_unusable_seconds=30.0):
        running.faults.unusable("pkcs11", "Object handle invalid")
        clock.now += 29.9
        await running.probes.publish()
        assert await running.status(LIVENESS) == SERVING
        running.faults.unusable("pkcs11", "Object handle invalid")  # a later failure: same start
        clock.now += 0.1
        await running.probes.publish()
        assert await running.status(LIVENESS) == NOT_SERVING
        assert await running.status(READINESS) == NOT_SERVING
        clock.now += 3600
        await running.probes.check_once()
        assert await running.status(LIVENESS) == NOT_SERVING  # until the kubelet restarts it


async def test_a_new_handshake_that_succeeds_makes_both_serve_again() -> None:
    clock = Clock()
    async for running in started_with_tls_key(clock, tls_key_unusable_seconds=30.0):
        running.faults.unusable("pkcs11", "Object handle invalid")
        clock.now += 31
        await running.probes.publish()
        assert await running.status(LIVENESS) == NOT_SERVING
        running.faults.usable()
        await running.probes.publish()
        assert set((await running.statuses()).values()) == {SERVING}
        assert running.gauges()["yibao.tls_key.usable"] == 1


async def test_the_probes_own_loop_turns_liveness_when_the_fault_is_due() -> None:
    """The loop wakes for the deadline itself (the round of checks is an hour away)."""
    async for running in running_probes(tls_key=KeyFaults(), tls_key_unusable_seconds=0.3):
        running.flags.hsm = running.flags.platform = True
        await running.probes.check_once()
        began = time.monotonic()
        running.faults.unusable("pkcs11", "Object handle invalid")
        await until(running, LIVENESS, NOT_SERVING)
        assert time.monotonic() - began >= 0.3


async def test_each_tls_key_transition_is_logged_once_without_secrets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    async for running in started_with_tls_key(clock, tls_key_unusable_seconds=30.0):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="sidecar.serving.probes"):
            running.faults.unusable("pkcs11", "Object handle invalid")
            running.faults.unusable("pkcs11", "Object handle invalid")
            await running.probes.publish()
            clock.now += 30
            await running.probes.publish()
            await running.probes.publish()
            running.faults.usable()
            await running.probes.publish()
        events = [r for r in caplog.records if r.getMessage().startswith("probes.tls_key")]
        assert [r.getMessage() for r in events] == [
            "probes.tls_key_unusable",
            "probes.tls_key_restart",
            "probes.tls_key_usable_again",
        ]
        assert (events[0].reason, events[0].error) == ("pkcs11", "Object handle invalid")
        assert events[1].unusable_seconds == 30.0
        assert all("pkcs11:" not in str(r.__dict__) for r in events)  # no URI


async def test_draining_keeps_liveness_whatever_the_tls_key_says() -> None:
    clock = Clock()
    async for running in started_with_tls_key(clock, tls_key_unusable_seconds=30.0):
        await running.probes.draining()
        running.faults.unusable("pkcs11", "Object handle invalid")
        clock.now += 60
        await running.probes.publish()
        assert await running.status(LIVENESS) == SERVING  # the drain is not cut short
        assert await running.status(READINESS) == NOT_SERVING


async def test_with_a_key_file_there_is_no_tls_key_state(running: Running) -> None:
    running.flags.hsm = running.flags.platform = True
    await running.probes.check_once()
    assert "yibao.tls_key.usable" not in running.gauges()

"""Cost of the peer-credential front (and the access filter) on calls over the Unix socket.

Run: ``.venv/bin/python benchmarks/bench_access.py [--calls N] [--seconds S] [--concurrency C]``
(``make bench-access``). Prints figures; asserts nothing.

Starts ``yibao-sidecar serve`` twice as a SEPARATE process (so the client here does not share
its event loop or GIL): once without ``[access]`` (gRPC listens on the public socket itself) and
once with it (the front accepts, reads SO_PEERCRED, and forwards to gRPC's private socket; the
access filter checks the policy and a rate limit). For each it measures, over one connection:

1. ``grpc.health.v1.Health/Check``: outside the filter chain, so the difference is the front's
   byte-forwarding hop alone; sequential latency (p50/p99) of N calls;
2. ``ConsentService/ListConsents``: through the whole filter chain (the access filter included;
   the service answers UNIMPLEMENTED, nothing contacts the platform); sequential latency;
3. the same with a 1 MiB request, to show the copy cost per byte;
4. throughput of health checks with C concurrent callers on C connections for S seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import grpc  # noqa: E402
from google.protobuf.message import Message  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from sidecar import devcerts  # noqa: E402
from sidecar._proto.yibao.gateway.v1 import consent_pb2  # noqa: E402
from sidecar.access.peer import UnixPeer  # noqa: E402
from sidecar.access.policy import PolicyFile  # noqa: E402
from sidecar.access.ratelimit import RateLimiter  # noqa: E402
from sidecar.interceptors.access_control import AccessControl  # noqa: E402
from sidecar.interceptors.caller import Caller  # noqa: E402
from sidecar.interceptors.chain import Call  # noqa: E402

METADATA = (("x-yibao-tenant", "bench"), ("x-yibao-operator", "bench-op"))
CONSENT = "/yibao.gateway.v1.ConsentService/ListConsents"


def write_config(work: Path, access: bool) -> tuple[Path, Path]:
    pki = devcerts.generate(work / "pki")
    socket = work / ("front.sock" if access else "direct.sock")
    text = f"""
[server]
socket_path = "{socket}"
max_message_bytes = {4 << 20}

[institution]
code = "H44030500001"
name = "bench"
division = "440300"

[platform]
url = "https://127.0.0.1:9"
ca_file = "{pki.ca_cert}"
client_cert_file = "{pki.client_cert}"
client_key_file = "{pki.client_key}"

[log]
level = "WARNING"
"""
    if access:
        policy = work / "policy.toml"
        policy.write_text(
            f'[[caller]]\nname = "bench"\nunix_uids = [{os.getuid()}]\ntenants = ["*"]\n'
            'rpcs = ["*"]\ntenant_rate = "1000000/second"\n'
        )
        text += f'\n[access]\npolicy_file = "{policy}"\nprivate_socket_parent = "{work}"\n'
    config = work / ("front.toml" if access else "direct.toml")
    config.write_text(text)
    return config, socket


@contextlib.asynccontextmanager
async def sidecar(config: Path, socket: Path) -> AsyncIterator[str]:
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "sidecar", "serve", "--config", str(config)),
        cwd=REPO,
        stderr=subprocess.DEVNULL,
    )
    target = f"unix:{socket}"
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            await asyncio.wait_for(channel.channel_ready(), 30)
        yield target
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 30)


async def latencies(call: Callable[[], Awaitable[object]], n: int) -> list[float]:
    for _ in range(min(200, n)):  # warm-up
        await call()
    out = []
    for _ in range(n):
        start = time.perf_counter()
        await call()
        out.append(time.perf_counter() - start)
    return out


async def expect_unimplemented(call: Callable[[], Awaitable[object]]) -> None:
    try:
        await call()
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.UNIMPLEMENTED:
            raise
    else:
        raise AssertionError("ListConsents answered")


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] * 1e6


async def measure(target: str, calls: int, seconds: float, concurrency: int) -> dict[str, str]:
    figures: dict[str, str] = {}
    async with grpc.aio.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        consent = channel.unary_unary(CONSENT, request_serializer=bytes)
        small = consent_pb2.ListConsentsRequest().SerializeToString()
        big = consent_pb2.ListConsentsRequest(page_token="x" * (1 << 20)).SerializeToString()

        hc = await latencies(lambda: health.Check(health_pb2.HealthCheckRequest()), calls)
        figures["health p50/p99 µs"] = f"{pct(hc, 50):8.0f} / {pct(hc, 99):8.0f}"
        lc = await latencies(
            lambda: expect_unimplemented(lambda: consent(small, metadata=METADATA)), calls
        )
        figures["filters p50/p99 µs"] = f"{pct(lc, 50):8.0f} / {pct(lc, 99):8.0f}"
        bc = await latencies(
            lambda: expect_unimplemented(lambda: consent(big, metadata=METADATA)),
            max(calls // 10, 20),
        )
        figures["1 MiB p50/p99 µs"] = f"{pct(bc, 50):8.0f} / {pct(bc, 99):8.0f}"

    channels = [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(concurrency)
    ]
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker(channel: grpc.aio.Channel) -> None:
        nonlocal done
        stub = health_pb2_grpc.HealthStub(channel)
        while time.perf_counter() < deadline:
            await stub.Check(health_pb2.HealthCheckRequest())
            done += 1

    try:
        await asyncio.gather(*(worker(c) for c in channels))
    finally:
        for channel in channels:
            await channel.close()
    figures[f"health calls/s, {concurrency} conns"] = f"{done / seconds:8.0f}"
    return figures


class _Context:
    """The two things the access filter asks of a gRPC context."""

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"transport_security_type": [b"insecure"]}

    def peer(self) -> str:
        return "unix-abstract:bench"


async def filter_alone(work: Path, calls: int) -> float:
    """µs per call of ``AccessControl`` by itself: policy, identity, two rate limits."""
    policy = work / "filter-policy.toml"
    policy.write_text(
        '[[caller]]\nname = "bench"\nunix_uids = [0]\ntenants = ["*"]\nrpcs = ["*"]\n'
        'tenant_rate = "1000000/second"\noperator_rate = "1000/second"\n'
    )
    source = PolicyFile(policy, {"ConsentService/ListConsents"}, 5.0)
    access = AccessControl(source, lambda _: UnixPeer(0, 0, 1), RateLimiter())

    request = consent_pb2.ListConsentsRequest()

    async def proceed() -> Message:
        return request

    start = time.perf_counter()
    for i in range(calls):
        call = Call(CONSENT, {}, _Context())  # type: ignore[arg-type]
        call.attributes["caller"] = Caller("bench", f"op-{i % 100}")
        await access.workload(call, functools.partial(access.tenant, call, proceed))
    return (time.perf_counter() - start) / calls * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ys-bench-", dir="/tmp") as tmp:
        work = Path(tmp)
        results = {}
        for name, access in (("direct gRPC", False), ("front + access", True)):
            config, socket = write_config(work, access)
            async with sidecar(config, socket) as target:
                results[name] = await measure(target, args.calls, args.seconds, args.concurrency)
        alone = await filter_alone(work, args.calls * 5)
    names = list(results)
    print(f"{'':32}" + "".join(f"{n:>22}" for n in names))
    for key in results[names[0]]:
        print(f"{key:32}" + "".join(f"{results[n][key]:>22}" for n in names))
    print(f"access filter alone, in-process: {alone:.1f} µs per call")


if __name__ == "__main__":
    asyncio.run(main())

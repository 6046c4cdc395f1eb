"""The dev pod, started on this machine the way its manifests say, passes its startup probe.

The rendered dev overlay is run by ``tests/k8s/podsim.py``: the init containers (``hsm-pin``
copies the PIN, ``softhsm-token`` makes and keys the token with ``yibao-hsm``) and then the
sidecar, each with the manifest's command and arguments, environment, user, read-only root and
working directory, and files at the mount paths (rebased under one temporary directory, as
podsim.py explains). Against the real simulator over mutual TLS, the kubelet's startup probe is
then asked the same question: grpc.health.v1 ``Check`` for ``yibao.sidecar.startup`` on the
health port.

Two values differ from the cluster, through the sidecar's documented environment overrides: the
platform's address (a Service name there, the local simulator here) and the health and metrics
ports (8081 and 9464 there, free ports here, since other tests may run on this machine at the same
time). The pod ordinal that the downward API provides is ``0``.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sidecar.serving import probes
from tests.k8s.conftest import IM, SIDECAR, Rendered
from tests.k8s.podsim import Pod
from yibao_devkit.simulator.server import RunningSimulator, running_simulator

ENTRYPOINT = ["/opt/yibao/bin/yibao-sidecar"]  # the image's (tests/k8s/test_containerfile.py)
SOFTHSM_IN_IMAGE = "/opt/softhsm/lib/libsofthsm2.so"
IMAGE_ENV = {"PATH": "/opt/yibao/bin:/usr/local/bin:/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}
SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.fixture
def pod_root() -> Iterator[Path]:
    """A short root: the socket's path under it must stay within 107 bytes."""
    if os.geteuid() != 0:
        pytest.fail("starting the pod as the kubelet does needs root (mount namespaces, setpriv)")
    path = Path(tempfile.mkdtemp(prefix="pod-", dir="/tmp"))
    os.chmod(path, 0o755)
    yield path
    subprocess.run(["umount", "-R", str(path)], capture_output=True, check=False)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def simulator() -> AsyncIterator[RunningSimulator]:
    async with running_simulator(seed=42, population_size=20) as running:
        yield running


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def dev_pod(dev: Rendered, root: Path, simulator: RunningSimulator, softhsm_lib: Path) -> Pod:
    pki = simulator.pki
    return Pod(
        root=root,
        spec=dev.pod,
        configmaps={o["metadata"]["name"]: o["data"] for o in dev.of_kind("ConfigMap")},
        secrets={
            "yibao-platform-tls": {
                "ca.pem": pki.ca_cert.read_bytes(),
                "client.pem": pki.client_cert.read_bytes(),
                "client-key.pem": pki.client_key.read_bytes(),
            },
            "yibao-hsm-user-pin": {"user.pin": f"u-{secrets.token_hex(8)}\n".encode()},
            "yibao-hsm-so-pin": {"so.pin": f"s-{secrets.token_hex(8)}\n".encode()},
        },
        image_paths={"/opt/yibao": Path(sys.prefix)},
        image_files={SOFTHSM_IN_IMAGE: softhsm_lib},
        image_env=IMAGE_ENV,
        field_values={
            "metadata.labels['apps.kubernetes.io/pod-index']": "0",
            "metadata.name": "im-service-0",
        },
    )


async def check(port: int, service: str) -> health_pb2.HealthCheckResponse:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)


async def wait_for_startup(port: int, process: subprocess.Popen[str]) -> None:
    """Poll as the kubelet does (period 2 s there, faster here) until SERVING."""
    for _ in range(300):
        if process.poll() is not None:
            pytest.fail(f"the sidecar exited ({process.returncode}): {process.communicate()[1]}")
        try:
            if (await check(port, probes.STARTUP)).status == SERVING:
                return
        except grpc.aio.AioRpcError:
            pass
        await asyncio.sleep(0.1)
    pytest.fail("the startup probe did not pass within 30 s")


IM_CLIENT = """
import os, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sidecar._proto.yibao.gateway.v1 import gateway_pb2, gateway_pb2_grpc
with grpc.insecure_channel(os.environ["YIBAO_SIDECAR_TARGET"]) as channel:
    answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    print(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))
    metadata = (("x-yibao-tenant", "dev-tenant"), ("x-yibao-operator", "op-1"))
    try:  # an empty request: past access control, validation refuses it
        gateway_pb2_grpc.InsuranceGatewayStub(channel).GetEnrollment(
            gateway_pb2.GetEnrollmentRequest(), metadata=metadata, timeout=5
        )
    except grpc.RpcError as error:
        print(error.code().name)
"""


@pytest.mark.slow
async def test_the_dev_pod_starts_as_its_manifests_say_and_passes_the_startup_probe(
    dev: Rendered, pod_root: Path, simulator: RunningSimulator, softhsm_lib: Path
) -> None:
    pod = dev_pod(dev, pod_root, simulator, softhsm_lib)
    init_names = [c["name"] for c in dev.pod["initContainers"]]
    assert init_names == ["hsm-pin", "softhsm-token", SIDECAR]
    for name in init_names[:-1]:
        done = await asyncio.to_thread(pod.run, name, ENTRYPOINT)
        assert done.returncode == 0, f"{name}: {done.stderr}"
    pin_copy = pod.volume_dir("hsm-pin") / "user.pin"
    stat = pin_copy.stat()
    sidecar_user = dev.user_of(SIDECAR)
    assert (stat.st_uid, stat.st_mode & 0o777) == (sidecar_user, 0o600)
    assert not (pod.volume_dir("hsm-so-pin") / "so.pin").exists()  # deleted after init-token

    port, metrics_port = free_port(), free_port()
    overrides = {
        "YIBAO_SIDECAR__PLATFORM__URL": simulator.url.split("/fsi/")[0],
        "YIBAO_SIDECAR__SERVER__HEALTH_LISTEN": f"127.0.0.1:{port}",
        "YIBAO_SIDECAR__TELEMETRY__PROMETHEUS__LISTEN": f"127.0.0.1:{metrics_port}",
    }
    process = pod.popen(SIDECAR, ENTRYPOINT, overrides)
    try:
        await wait_for_startup(port, process)
        for service in (probes.READINESS, probes.LIVENESS):
            assert (await check(port, service)).status == SERVING, service
        # the health port carries the health service and nothing else
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            other = channel.unary_unary("/yibao.gateway.v1.InsuranceGateway/GetEnrollment")
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await other(b"", timeout=2)
            assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
        # the IM container's user reaches the socket through the shared emptyDir
        im = await asyncio.to_thread(pod.run, IM, [sys.executable, "-c", IM_CLIENT])
        assert (im.returncode, im.stdout.split()) == (0, ["SERVING", "INVALID_ARGUMENT"]), im.stderr
        # the same client as any other user of the socket's group: the policy does not know it
        intruder = await asyncio.to_thread(
            pod.run, IM, [sys.executable, "-c", IM_CLIENT], {"runAsUser": 10003}
        )
        assert intruder.stdout.split() == ["SERVING", "UNAUTHENTICATED"], intruder.stderr
        # what the PodMonitor scrapes: the IM container's refused call, by its numeric status
        async with httpx.AsyncClient() as client:
            scraped = (await client.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
        refused_calls = [
            line
            for line in scraped.splitlines()
            if line.startswith("rpc_server_call_duration_seconds_count{")
            and 'rpc_grpc_status_code="3"' in line  # INVALID_ARGUMENT
        ]
        assert len(refused_calls) == 1 and refused_calls[0].endswith(" 1.0"), scraped
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.to_thread(process.communicate, timeout=60)
    assert process.returncode == 0, stderr
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    names = [event["event"] for event in events]
    assert {"hsm.ready", "probes.startup_passed", "server.stopped"} <= set(names)
    expiry = [event for event in events if event["event"] == "certificate.expiry"]
    assert [event["certificate"] for event in expiry] == ["tls_client"]
    assert "certificate.signing_absent" in names  # dev imports no certificate for its key
    assert pin_copy.read_text().strip() not in stderr
    # the audit trail was on: the calls above are recorded in a chain named after the pod, sealed
    # by the final checkpoint, and nothing was left in the spool
    database = sqlite3.connect(pod.volume_dir("yibao-state") / "sidecar.db")
    try:
        chains = database.execute(
            "SELECT chain, count(*) FROM audit_records WHERE kind = 'rpc.intent' GROUP BY chain"
        ).fetchall()
        checkpoints = database.execute("SELECT count(*) FROM audit_checkpoints").fetchone()[0]
    finally:
        database.close()
    assert [(chain.split("/")[0], count) for chain, count in chains] == [("im-service-0", 2)]
    assert checkpoints >= 1
    spool_dir = pod.volume_dir("audit-spool") / "spool"
    assert spool_dir.stat().st_mode & 0o777 == 0o700
    assert all(path.stat().st_size == 0 for path in spool_dir.iterdir())

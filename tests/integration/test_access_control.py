"""Caller access control through a real server: every refusal path, reloads, the kernel identity.

The sidecar is built with ``app.build`` and served in-process; calls go over its public Unix
socket (through the peer-credential front) or its mutual-TLS TCP port. Allowed calls use
``ConsentService`` RPCs, which answer UNIMPLEMENTED after the filters, so nothing here contacts
the platform; the development PKI only satisfies the platform section of the configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from sidecar import app
from sidecar._proto.yibao.gateway.v1 import consent_pb2
from sidecar._proto.yibao.gateway.v1 import gateway_pb2_grpc as gateway_grpc
from sidecar.access.front import PeerCredentialFront
from sidecar.config import ConfigError, Settings
from sidecar.observability.logs import JsonFormatter
from tests.integration.conftest import pseudonym_key_file, settings_for
from tests.integration.consent_support import consent_to
from tests.integration.test_server import SlowSimulator, enrollment_request
from yibao_devkit import devcerts
from yibao_devkit.simulator.population import Population
from yibao_devkit.simulator.server import running_simulator

TENANT = "acme-corp"
OPERATOR = "im-bot-01"
CONSENT = "/yibao.gateway.v1.ConsentService/ListConsents"
ENROLLMENT = "/yibao.gateway.v1.InsuranceGateway/GetEnrollment"
SPIFFE_IM = "spiffe://corp.example/ns/im/sa/im-service"
ME = os.getuid()
NOBODY = 65534


def policy_text(
    *,
    uids: Sequence[int] = (ME,),
    uris: Sequence[str] = (SPIFFE_IM,),
    tenants: Sequence[str] = (TENANT,),
    rpcs: Sequence[str] = ("ConsentService/*", "InsuranceGateway/CheckEligibility"),
    tenant_rate: str | None = None,
    operator_rate: str | None = None,
) -> str:
    lines = [
        "[[caller]]",
        'name = "im-service"',
        f"unix_uids = {list(uids)}",
        f"tls_uris = {json.dumps(list(uris))}",
        f"tenants = {json.dumps(list(tenants))}",
        f"rpcs = {json.dumps(list(rpcs))}",
    ]
    if tenant_rate:
        lines.append(f'tenant_rate = "{tenant_rate}"')
    if operator_rate:
        lines.append(f'operator_rate = "{operator_rate}"')
    return "\n".join(lines) + "\n"


def write_policy(path: Path, text: str) -> None:
    """Replace the file as a deployment would (a new inode, atomically)."""
    staged = path.with_suffix(".new")
    staged.write_text(text)
    os.replace(staged, path)


# -- a caller PKI with SPIFFE-style URI SANs ---------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client: dict[str, tuple[Path, Path]]  # label -> (cert, key)


def _cert(
    subject: str,
    issuer: tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None,
    names: Sequence[x509.GeneralName] = (),
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[1].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
    return key, builder.sign(issuer[0] if issuer else key, hashes.SHA256())


def _write(directory: Path, label: str, pair: tuple[Any, x509.Certificate]) -> tuple[Path, Path]:
    cert, key = directory / f"{label}.pem", directory / f"{label}-key.pem"
    cert.write_bytes(pair[1].public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        pair[0].private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key.chmod(0o600)
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("caller-pki")
    ca = _cert("caller CA", None)
    other_ca = _cert("someone else's CA", None)
    (directory / "ca.pem").write_bytes(ca[1].public_bytes(serialization.Encoding.PEM))
    server = _cert(
        "sidecar",
        ca,
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    server_cert, server_key = _write(directory, "server", server)
    uri = x509.UniformResourceIdentifier
    clients = {
        "im": _write(directory, "im", _cert("im", ca, [uri(SPIFFE_IM)])),
        "stranger": _write(
            directory, "stranger", _cert("x", ca, [uri("spiffe://corp.example/ns/x/sa/x")])
        ),
        "foreign": _write(directory, "foreign", _cert("im", other_ca, [uri(SPIFFE_IM)])),
    }
    return Pki(directory / "ca.pem", server_cert, server_key, clients)


# -- the sidecar under test ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def platform_pki(tmp_path_factory: pytest.TempPathFactory) -> devcerts.DevPki:
    return devcerts.generate(tmp_path_factory.mktemp("platform-pki"))


@dataclass
class Env:
    socket_dir: Path
    policy: Path
    platform: devcerts.DevPki
    tls: Pki

    def settings(self, *, access: bool = True, **server: Any) -> Settings:
        data: dict[str, Any] = {
            "server": {"socket_path": str(self.socket_dir / "sidecar.sock"), **server},
            "store": {"sqlite_path": str(self.socket_dir / "store" / "sidecar.db")},
            "consent": {"pseudonym_key_file": str(pseudonym_key_file(self.socket_dir))},
            "institution": {"code": "H44030500001", "name": "测试机构", "division": "440300"},
            "platform": {
                "url": "https://127.0.0.1:9",
                "ca_file": str(self.platform.ca_cert),
                "client_cert_file": str(self.platform.client_cert),
                "client_key_file": str(self.platform.client_key),
            },
        }
        if access:
            data["access"] = {
                "policy_file": str(self.policy),
                "reload_interval_seconds": 0,
                "private_socket_parent": str(self.socket_dir),
            }
        return Settings.model_validate(data)

    def tls_server(self) -> dict[str, Any]:
        return {
            "tcp_listen": "127.0.0.1:0",
            "tls": {
                "cert_file": str(self.tls.server_cert),
                "key_file": str(self.tls.server_key),
                "client_ca_file": str(self.tls.ca),
            },
        }


@pytest.fixture
def env(short_dir: Path, platform_pki: devcerts.DevPki, pki: Pki) -> Env:
    policy = short_dir / "policy.toml"
    policy.write_text(policy_text())
    return Env(short_dir, policy, platform_pki, pki)


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[app.Sidecar]:
    sidecar = app.build(settings)
    await sidecar.prepare()
    await sidecar.server.start()
    try:
        yield sidecar
    finally:
        await sidecar.server.stop()
        await sidecar.close()


@dataclass(frozen=True)
class Outcome:
    code: grpc.StatusCode
    reason: str = ""
    metadata: dict[str, str] | None = None
    retry_seconds: float | None = None


async def call(
    channel: grpc.aio.Channel,
    method: str = CONSENT,
    tenant: str = TENANT,
    operator: str = OPERATOR,
    request: bytes = b"",
) -> Outcome:
    rpc = channel.unary_unary(method, request_serializer=bytes, response_deserializer=bytes)
    try:
        await rpc(request, metadata=(("x-yibao-tenant", tenant), ("x-yibao-operator", operator)))
    except grpc.aio.AioRpcError as error:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
        info, retry = error_details_pb2.ErrorInfo(), None
        for detail in status.details if status else ():
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                detail.Unpack(info)
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                hint = error_details_pb2.RetryInfo()
                detail.Unpack(hint)
                retry = hint.retry_delay.ToNanoseconds() / 1e9
        return Outcome(error.code(), info.reason, dict(info.metadata), retry)
    return Outcome(grpc.StatusCode.OK)


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [
        json.loads(JsonFormatter().format(r))
        for r in caplog.records
        if r.name == "sidecar.access" and r.getMessage() == "rpc"
    ]


ALLOWED = grpc.StatusCode.INVALID_ARGUMENT  # ConsentService's answer to an empty request


def unix_channel(env: Env) -> grpc.aio.Channel:
    """A channel with a connection of its own (gRPC shares them between channels otherwise)."""
    return grpc.aio.insecure_channel(
        f"unix:{env.socket_dir / 'sidecar.sock'}", options=[("grpc.use_local_subchannel_pool", 1)]
    )


# -- the Unix socket: the kernel's identity --------------------------------------------------


async def test_a_configured_uid_is_let_through_and_logged_by_caller_name(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sidecar.access")
    async with serving(env.settings()), unix_channel(env) as channel:
        assert (await call(channel)).code == ALLOWED
    assert access_lines(caplog)[-1]["caller"] == "im-service"


async def test_an_unknown_uid_is_unauthenticated(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    write_policy(env.policy, policy_text(uids=[4242]))
    caplog.set_level(logging.INFO, logger="sidecar.access")
    async with serving(env.settings()), unix_channel(env) as channel:
        outcome = await call(channel)
    assert (outcome.code, outcome.reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "PEER_UNAUTHENTICATED",
    )
    line = access_lines(caplog)[-1]
    assert (line["reason"], line["caller"]) == ("PEER_UNAUTHENTICATED", "")


async def test_an_unknown_uid_is_refused_before_its_metadata_or_bytes_are_looked_at(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    """Malformed metadata and bytes that do not parse: the unknown peer is refused all the same
    (not UNKNOWN from gRPC's decoder, not CALLER_UNAUTHENTICATED); a known one gets
    MALFORMED_REQUEST, logged under its policy name."""
    malformed = b"\x0a\x05ab"  # a length past the end
    caplog.set_level(logging.INFO, logger="sidecar.access")
    async with serving(env.settings()), unix_channel(env) as channel:
        known = await call(channel, request=malformed)
        write_policy(env.policy, policy_text(uids=[4242]))
        unknown = [
            await call(channel, request=malformed),
            await call(channel, request=malformed, tenant="", operator="13912345678"),
            await call(channel, method=ENROLLMENT, request=b"\xff" * 64),
        ]
    assert (known.code, known.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_REQUEST")
    assert {(o.code, o.reason) for o in unknown} == {
        (grpc.StatusCode.UNAUTHENTICATED, "PEER_UNAUTHENTICATED")
    }
    lines = access_lines(caplog)[-4:]
    assert [(line["reason"], line["caller"]) for line in lines] == [
        ("MALFORMED_REQUEST", "im-service"),
        *[("PEER_UNAUTHENTICATED", "")] * 3,
    ]


async def test_an_rpc_the_caller_may_not_use_is_permission_denied(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sidecar.access")
    async with serving(env.settings()), unix_channel(env) as channel:
        outcome = await call(channel, ENROLLMENT)
    assert (outcome.code, outcome.reason) == (grpc.StatusCode.PERMISSION_DENIED, "RPC_NOT_ALLOWED")
    assert outcome.metadata == {"caller": "im-service"}
    # the refusal is on the call (call.access) for the log and the audit trail
    line = access_lines(caplog)[-1]
    assert (line["caller"], line["reason"], line["status"]) == (
        "im-service",
        "RPC_NOT_ALLOWED",
        "PERMISSION_DENIED",
    )


async def test_a_tenant_the_caller_may_not_act_for_is_permission_denied(env: Env) -> None:
    async with serving(env.settings()), unix_channel(env) as channel:
        outcome = await call(channel, tenant="globex")
    assert (outcome.code, outcome.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "TENANT_NOT_ALLOWED",
    )


async def test_the_tenant_rate_limit_refuses_with_a_retry_hint(env: Env) -> None:
    write_policy(env.policy, policy_text(tenant_rate="2/minute"))
    async with serving(env.settings()), unix_channel(env) as channel:
        first = await call(channel, operator="op-1")
        second = await call(channel, operator="op-2")
        third = await call(channel, operator="op-3")
        other_tenant_policy = policy_text(tenants=[TENANT, "globex"], tenant_rate="2/minute")
        write_policy(env.policy, other_tenant_policy)
        other_tenant = await call(channel, tenant="globex")
    assert [first.code, second.code] == [ALLOWED, ALLOWED]
    assert (third.code, third.reason, third.metadata) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "RATE_LIMITED",
        {"limit": "tenant"},
    )
    assert third.retry_seconds is not None and 0 < third.retry_seconds <= 60
    assert other_tenant.code == ALLOWED  # each tenant has its own budget


async def test_the_operator_rate_limit_is_per_operator_and_spares_the_tenant(env: Env) -> None:
    write_policy(env.policy, policy_text(tenant_rate="3/minute", operator_rate="1/minute"))
    async with serving(env.settings()), unix_channel(env) as channel:
        outcomes = [
            await call(channel, operator="op-1"),
            await call(channel, operator="op-1"),  # refused: counts against no limit
            await call(channel, operator="op-2"),
            await call(channel, operator="op-3"),
            await call(channel, operator="op-4"),  # the tenant's three are used up
        ]
    assert [(o.code, (o.metadata or {}).get("limit", "")) for o in outcomes] == [
        (ALLOWED, ""),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "operator"),
        (ALLOWED, ""),
        (ALLOWED, ""),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "tenant"),
    ]


async def test_a_new_policy_applies_without_a_restart(env: Env) -> None:
    write_policy(env.policy, policy_text(uids=[4242]))
    async with serving(env.settings()), unix_channel(env) as channel:
        before = await call(channel)
        write_policy(env.policy, policy_text())
        after = await call(channel)
        write_policy(env.policy, policy_text(tenants=["globex"]))
        narrowed = await call(channel)
    assert [before.reason, after.code, narrowed.reason] == [
        "PEER_UNAUTHENTICATED",
        ALLOWED,
        "TENANT_NOT_ALLOWED",
    ]


async def test_an_invalid_new_policy_keeps_the_old_one_and_says_so_once(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with serving(env.settings()), unix_channel(env) as channel:
        write_policy(env.policy, policy_text(uids=[4242]) + "unexpected = 1\n")
        outcomes = [await call(channel) for _ in range(3)]
        env.policy.unlink()
        missing = await call(channel)
    assert {o.code for o in [*outcomes, missing]} == {ALLOWED}
    rejected = [r for r in caplog.records if r.getMessage() == "access.policy_rejected"]
    assert len(rejected) == 2  # one for the bad version, one for the missing file
    line = json.loads(JsonFormatter().format(rejected[0]))
    assert "unexpected: unknown key" in line["error"] and "\n" not in line["error"]


async def test_stopping_removes_the_public_socket_and_the_private_directory(env: Env) -> None:
    async with serving(env.settings()) as sidecar, unix_channel(env) as channel:
        assert (await call(channel)).code == ALLOWED
        front = sidecar.server.front
        assert isinstance(front, PeerCredentialFront)
        private = Path(front.upstream.removeprefix("unix:")).parent
        assert private.parent == env.socket_dir
    assert not private.exists()
    assert not (env.socket_dir / "sidecar.sock").exists()
    assert front.connections == 0


async def test_the_private_listener_behind_the_front_gives_no_identity(env: Env) -> None:
    async with serving(env.settings()) as sidecar:
        front = sidecar.server.front
        assert isinstance(front, PeerCredentialFront)
        assert (Path(front.upstream.removeprefix("unix:")).parent.stat().st_mode & 0o777) == 0o700
        async with grpc.aio.insecure_channel(front.upstream) as direct:
            outcome = await call(direct)
    assert (outcome.code, outcome.reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "PEER_UNAUTHENTICATED",
    )


def front_names() -> list[tuple[str, int]]:
    """The front's abstract names in use, as any local process can read them."""
    names = []
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        path = line.split()[-1] if len(line.split()) > 7 else ""
        if path.startswith("@yibao-sidecar/"):
            prefix, _, number = path[1:].rpartition("/")
            names.append((prefix, int(number)))
    return names


@contextlib.asynccontextmanager
async def squatting_forwarder(listen: Path, target: str, name: str) -> AsyncIterator[None]:
    """Forwards connections on ``listen`` to ``target`` from a socket bound to ``name``."""
    squatter = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    squatter.bind("\0" + name)  # taken before the front gets to use it
    squatter.setblocking(False)
    await asyncio.get_running_loop().sock_connect(squatter, target)

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_unix_connection(sock=squatter)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_unix_server(accept, str(listen))
    try:
        yield
    finally:
        server.close()


async def test_a_squatted_connection_name_gives_no_identity(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sidecar.access.front")
    async with serving(env.settings()) as sidecar, unix_channel(env) as channel:
        assert (await call(channel)).code == ALLOWED
        [(prefix, number)] = front_names()
        front = sidecar.server.front
        assert isinstance(front, PeerCredentialFront)
        squatted = f"{prefix}/{number + 1}"  # the name the front's next connection would take
        listen = env.socket_dir / "squat.sock"
        async with (
            squatting_forwarder(listen, front.upstream.removeprefix("unix:"), squatted),
            grpc.aio.insecure_channel(f"unix:{listen}") as squatter,
        ):
            async with unix_channel(env) as victim:
                victims_call = await call(victim)  # its first upstream cannot bind the name
            squatters_call = await call(squatter)
    failed = [r for r in caplog.records if r.getMessage() == "access.front.upstream_failed"]
    assert [getattr(r, "error", "") for r in failed] == ["OSError"]  # EADDRINUSE: not ours
    # gRPC connects again (a new connection, a new name) and the victim's call goes through
    assert victims_call.code in (ALLOWED, grpc.StatusCode.UNAVAILABLE)
    assert (squatters_call.code, squatters_call.reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "PEER_UNAUTHENTICATED",
    )


async def test_large_messages_and_many_connections_pass_the_front_intact(env: Env) -> None:
    def request(size: int) -> bytes:
        return consent_pb2.ListConsentsRequest(page_token="x" * size).SerializeToString()

    async with serving(env.settings(max_message_bytes=4 << 20)) as sidecar:
        channels = [unix_channel(env) for _ in range(20)]
        try:
            outcomes = await asyncio.gather(
                *(call(c, request=request(1000 + i * 150_000)) for i, c in enumerate(channels))
            )
            health = await health_pb2_grpc.HealthStub(channels[0]).Check(
                health_pb2.HealthCheckRequest()
            )
        finally:
            for channel in channels:
                await channel.close()
        front = sidecar.server.front
        assert isinstance(front, PeerCredentialFront)
        for _ in range(100):
            if front.connections == 0:
                break
            await asyncio.sleep(0.02)
        assert front.connections == 0  # every pipe closed, every name forgotten
    assert {o.code for o in outcomes} == {ALLOWED}  # parsed whole: up to 2.9 MB each
    assert health.status == health_pb2.HealthCheckResponse.SERVING


CHILD = textwrap.dedent(
    """
    import asyncio, os, sys
    import grpc  # imported as root: the venv is not readable once the uid is dropped
    from grpc_status import rpc_status
    from google.rpc import error_details_pb2

    async def main(target):
        os.setresgid(65534, 65534, 65534)
        os.setgroups([])
        os.setresuid(65534, 65534, 65534)
        async with grpc.aio.insecure_channel(target) as channel:
            rpc = channel.unary_unary(
                "/yibao.gateway.v1.ConsentService/ListConsents",
                request_serializer=bytes, response_deserializer=bytes,
            )
            md = (("x-yibao-tenant", "acme-corp"), ("x-yibao-operator", "op-1"))
            try:
                await rpc(b"", metadata=md, timeout=10)
                print("OK")
            except grpc.aio.AioRpcError as error:
                info = error_details_pb2.ErrorInfo()
                for detail in rpc_status.from_call(error).details:
                    if detail.Is(info.DESCRIPTOR):
                        detail.Unpack(info)
                print(error.code().name, info.reason)

    asyncio.run(main(sys.argv[1]))
    """
)


async def call_as_nobody(env: Env) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        f"unix:{env.socket_dir / 'sidecar.sock'}",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    return out.decode().strip()


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to become another uid")
async def test_the_kernel_identity_decides_not_the_process_that_asks(env: Env) -> None:
    env.socket_dir.chmod(0o755)  # let uid 65534 reach the socket (its mode is 0666 below)
    async with serving(env.settings(socket_mode=0o666)):
        as_nobody_refused = await call_as_nobody(env)
        write_policy(env.policy, policy_text(uids=[NOBODY]))
        as_nobody_allowed = await call_as_nobody(env)
        async with unix_channel(env) as channel:
            as_root_now = await call(channel)
    assert as_nobody_refused == "UNAUTHENTICATED PEER_UNAUTHENTICATED"
    assert as_nobody_allowed == "INVALID_ARGUMENT INVALID_REQUEST"  # past the filters
    assert as_root_now.reason == "PEER_UNAUTHENTICATED"


# -- TCP: mutual TLS and the certificate's identity ----------------------------------------------


def tls_channel(env: Env, port: int, client: str | None) -> grpc.aio.Channel:
    ca = env.tls.ca.read_bytes()
    if client is None:
        credentials = grpc.ssl_channel_credentials(ca)
    else:
        cert, key = env.tls.client[client]
        credentials = grpc.ssl_channel_credentials(ca, key.read_bytes(), cert.read_bytes())
    return grpc.aio.secure_channel(
        f"127.0.0.1:{port}", credentials, options=[("grpc.ssl_target_name_override", "localhost")]
    )


async def test_tcp_callers_are_known_by_their_certificate_uri(env: Env) -> None:
    async with serving(env.settings(**env.tls_server())) as sidecar:
        port = sidecar.server.tcp_port
        assert port
        async with tls_channel(env, port, "im") as channel:
            known = await call(channel)
            not_allowed = await call(channel, ENROLLMENT)
        async with tls_channel(env, port, "stranger") as channel:
            stranger = await call(channel)
    assert known.code == ALLOWED
    assert not_allowed.reason == "RPC_NOT_ALLOWED"
    assert (stranger.code, stranger.reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "PEER_UNAUTHENTICATED",
    )


@pytest.mark.parametrize("client", [None, "foreign"], ids=["no-certificate", "other-ca"])
async def test_tcp_without_a_certificate_of_the_client_ca_never_gets_a_connection(
    env: Env, client: str | None
) -> None:
    async with serving(env.settings(**env.tls_server())) as sidecar:
        assert sidecar.server.tcp_port
        async with tls_channel(env, sidecar.server.tcp_port, client) as channel:
            rpc = channel.unary_unary(CONSENT, request_serializer=bytes)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await rpc(b"", timeout=5)
    # The handshake fails, so no RPC exists to carry a status of ours: gRPC reports UNAVAILABLE.
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_plaintext_tcp_for_development_has_no_identity(env: Env) -> None:
    settings = env.settings(tcp_listen="127.0.0.1:0", tcp_plaintext_for_development=True)
    async with (
        serving(settings) as sidecar,
        grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.server.tcp_port}") as channel,
    ):
        outcome = await call(channel)
    assert outcome.reason == "PEER_UNAUTHENTICATED"


# -- start-up ----------------------------------------------------------------------------------


def test_an_invalid_policy_stops_start_up_with_one_line(env: Env) -> None:
    write_policy(env.policy, policy_text(rpcs=["InsuranceGateway/GetEnrolment"]))
    with pytest.raises(ConfigError) as caught:
        app.build(env.settings())
    assert str(caught.value) == (
        f"config: access.policy_file: access policy {env.policy}: caller[0].rpcs: "
        "InsuranceGateway/GetEnrolment names no RPC of the sidecar"
    )


def test_unusable_tls_files_stop_start_up_with_one_line(env: Env) -> None:
    server = env.tls_server()
    server["tls"]["key_file"] = str(env.tls.client["im"][1])  # a key of another certificate
    with pytest.raises(ConfigError, match=r"^config: server\.tls\.cert_file/key_file"):
        app.build(env.settings(**server))


# -- through to the platform, and the drain on SIGTERM ------------------------------------------


@pytest.mark.slow
async def test_calls_through_the_front_reach_the_platform_and_drain_on_stop(env: Env) -> None:
    rpcs = ["InsuranceGateway/GetEnrollment", "ConsentService/GrantConsent"]
    write_policy(env.policy, policy_text(rpcs=rpcs))
    platform = SlowSimulator(Population.generate(7, 20))
    async with running_simulator(platform) as simulator:
        base = settings_for(simulator, env.socket_dir, grace_period_seconds=10)
        settings = Settings.model_validate(
            {
                **base.model_dump(mode="json"),
                "access": {"policy_file": str(env.policy), "reload_interval_seconds": 0},
            }
        )
        async with serving(settings) as sidecar, unix_channel(env) as channel:
            stub = gateway_grpc.InsuranceGatewayStub(channel)
            request = enrollment_request(platform.population)
            metadata = (("x-yibao-tenant", TENANT), ("x-yibao-operator", OPERATOR))
            await consent_to(channel, [request.subject], metadata=metadata)
            await stub.GetEnrollment(request, metadata=metadata)  # sign in first
            in_flight = [
                asyncio.ensure_future(stub.GetEnrollment(request, metadata=metadata))
                for _ in range(10)
            ]
            while platform.calls.count("1101") < 11:
                await asyncio.sleep(0.01)
            await sidecar.server.stop()  # the front stops accepting; gRPC drains through it
            answers = await asyncio.gather(*in_flight)
    assert all(a.person.name == request.subject.name for a in answers)

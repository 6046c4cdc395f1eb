"""The assembled sidecar, as its own process, with the platform TLS key inside SoftHSM.

``[platform] client_key = "token:tls"`` with ``transport = "curl"``: the handshake with the devkit
simulator's gateway is signed in the token through OpenSSL's ``pkcs11`` engine (libp11).

Debian 12's libp11 (0.4.12) enumerates every private key of the token before it matches the URI
and gives up at the first key that is neither EC nor RSA: in the ``[hsm]`` token, which always
holds the SM2 signing key, it finds no key at all. So the TLS key lives in a token of its own
(``[hsm] tls_token_label``, same module and PIN file), and the sidecar refuses to start, in one
line, when it is asked to use a TLS key that shares a token with SM2 keys.

Also here: every other start-up refusal of the TLS identity (one line, no PIN), the gateway
refusing a client certificate from another CA (UNAVAILABLE, not sent), and the token vanishing
while connections are pooled (what libp11 really does: pooled connections keep working, new
handshakes fail at once with UNAVAILABLE, and the process does not recover by itself when the
token returns: readiness turns NOT_SERVING at once, liveness after ``[server]
tls_key_unusable_seconds``, and the restart the kubelet then makes heals it).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hsm.inittoken import init_token
from hsm.pin import Pin
from hsm.tlskey import TlsKeyStore
from hsm.token import HsmToken, TokenConfig
from sidecar._proto.yibao.gateway.v1 import gateway_pb2 as gateway
from sidecar._proto.yibao.gateway.v1 import gateway_pb2_grpc as gateway_grpc
from sidecar.serving.probes import LIVENESS, READINESS
from tests.hsm_fixtures import MadeToken, SoftHsmTokens
from tests.integration.conftest import TENANT_METADATA, pseudonym_key_file
from tests.integration.consent_support import consent_to, subject_of
from tests.integration.test_server import sidecar_process, wait_serving
from tests.tls_pki import make_ca
from yibao_devkit import devcerts
from yibao_devkit.devcerts import DevPki
from yibao_devkit.simulator.server import RunningSimulator, running_simulator

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)  # the stranger CA's validity; no host clock


@dataclass(frozen=True)
class TlsTokens:
    """The sidecar's ``[hsm]`` token and the token of its TLS key, with the PKI around them."""

    main: MadeToken  # sign, kek, pseudonym, and a TLS key next to the SM2 key (refused)
    tls_label: str  # a token holding only the TLS key; same module and user PIN as ``main``
    tls_dir: Path  # SoftHSM's directory of that token (the fault test moves it away)
    pki: DevPki  # the dev CA certifies the TLS key; no client key file exists
    stranger_cert: Path  # a certificate for the TLS key from a CA the gateway does not know
    public_point: bytes  # the TLS key's uncompressed EC point

    @property
    def pin(self) -> str:
        return self.main.user_pin_file.read_text().strip()

    def hsm(self, *, own_token: bool = True, **changes: str) -> dict[str, Any]:
        section: dict[str, Any] = {**self.main.hsm_section()}
        if own_token:
            section["tls_token_label"] = self.tls_label
        return {**section, **changes}


def make_tls_tokens(softhsm_tokens: SoftHsmTokens, directory: Path, prefix: str) -> TlsTokens:
    """Tokens ``<prefix>`` ([hsm]) and ``<prefix>-tls`` (the TLS key alone), same PIN."""
    main = softhsm_tokens.make(prefix, purposes=("sign", "kek", "pseudonym"))
    pin = main.user_pin_file.read_text().strip()
    tokens = softhsm_tokens.run_dir / "tokens"
    before = set(tokens.iterdir())
    tls_label = f"{prefix}-tls"
    init_token(
        str(softhsm_tokens.lib),
        tls_label,
        Pin(main.so_pin_file.read_text().strip(), "test SO PIN"),
        Pin(pin, "test user PIN"),
    )
    (tls_dir,) = set(tokens.iterdir()) - before
    config = TokenConfig(
        module=str(main.lib),
        token_label=tls_label,
        user_pin_file=str(main.user_pin_file),
        pool_size=1,
    )
    with HsmToken.open(config) as token:
        spki = TlsKeyStore(token).generate().spki_der
    with main.open(pool_size=1) as token:  # the same kind of key beside the SM2 signing key
        TlsKeyStore(token).generate()
    public = serialization.load_der_public_key(spki)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    pki = devcerts.generate_for_client_key(directory / "pki", public)
    assert not pki.client_key.exists()
    ca_key, ca = make_ca("stranger CA", NOW)
    stranger = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, devcerts.CLIENT_COMMON_NAME)])
        )
        .issuer_name(ca.subject)
        .public_key(public)
        .serial_number(2)
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=3650))
        .sign(ca_key, hashes.SHA256())
    )
    stranger_cert = directory / "stranger-client.pem"
    stranger_cert.write_bytes(stranger.public_bytes(serialization.Encoding.PEM))
    point = public.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return TlsTokens(main, tls_label, tls_dir, pki, stranger_cert, point)


@pytest.fixture(scope="module")
def tls_tokens(
    softhsm_tokens: SoftHsmTokens, tmp_path_factory: pytest.TempPathFactory
) -> TlsTokens:
    return make_tls_tokens(softhsm_tokens, tmp_path_factory.mktemp("tls-sidecar"), "tlsk-side")


# -- the sidecar process -----------------------------------------------------------------------
def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(str(value))  # a TOML basic string for these paths and labels


def sidecar_config(
    path: Path,
    socket_dir: Path,
    *,
    platform: dict[str, Any],
    hsm: dict[str, Any] | None,
    simulator: RunningSimulator | None = None,
    server: dict[str, Any] | None = None,
) -> Path:
    """A sidecar configuration; ``platform`` is the whole ``[platform]`` section."""
    institution = {"code": "H11010500001", "name": "测试机构", "division": "110105"}
    if simulator is not None:
        institution.update(code=simulator.app.institution_code, division=simulator.app.division)
    sections: dict[str, dict[str, Any]] = {
        "server": {
            "socket_path": socket_dir / "sidecar.sock",
            "grace_period_seconds": 5,
            **(server or {}),
        },
        "institution": institution,
        "platform": {"transport": "curl", "timeout_seconds": 5, **platform},
        # every failure answers at once: no breaker opening, no retries hiding what happened
        "platform.resilience": {"breaker_failure_threshold": 1000, "retry_attempts": 1},
        "store": {"sqlite_path": socket_dir / "store" / "sidecar.db"},
        "consent": {"pseudonym_key_file": pseudonym_key_file(socket_dir)},
    }
    if hsm is not None:
        sections["hsm"] = hsm
    text = "".join(
        f"[{name}]\n" + "".join(f"{key} = {_toml(value)}\n" for key, value in values.items())
        for name, values in sections.items()
    )
    path.write_text(text, encoding="utf-8")
    return path


def token_platform(
    tokens: TlsTokens, url: str, *, cert: Path | None = None, **changes: Any
) -> dict[str, Any]:
    return {
        "url": url,
        "ca_file": tokens.pki.ca_cert,
        "client_cert_file": cert or tokens.pki.client_cert,
        "client_key": "token:tls",
        **changes,
    }


def base_url(simulator: RunningSimulator) -> str:
    return simulator.url.split("/fsi/")[0]


@dataclass
class Process:
    popen: subprocess.Popen[str]
    channel: grpc.aio.Channel
    pid: int  # the sidecar's own: under a tracer, the tracer's child
    stderr: str = ""
    stopped: bool = False

    def terminate(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)


@contextlib.asynccontextmanager
async def serving(
    config: Path, env: dict[str, str], argv_prefix: tuple[str, ...] = ()
) -> AsyncIterator[Process]:
    """``yibao-sidecar serve`` as its own process (optionally under ``argv_prefix``), serving."""
    if argv_prefix:
        popen = prefixed_sidecar_process(config, env, argv_prefix)
    else:
        popen = sidecar_process(config, env)
    socket_path = socket_of(config)
    running: Process | None = None
    try:
        async with grpc.aio.insecure_channel(f"unix:{socket_path}") as channel:
            await serving_soon(channel, popen)
            running = Process(popen, channel, traced_child(popen.pid) if argv_prefix else popen.pid)
            yield running
    finally:
        if running is None or not running.stopped:
            if running is not None:
                running.terminate()
            elif popen.poll() is None:
                popen.kill()  # a tracer whose child never served (the child dies with it)
            popen.communicate(timeout=60)


async def serving_soon(channel: grpc.aio.Channel, popen: subprocess.Popen[str]) -> None:
    """Like ``wait_serving``, with room for a start-up slowed by strace on a busy machine."""
    for _ in range(2):
        try:
            await wait_serving(channel, popen)
            return
        except pytest.fail.Exception:
            if popen.poll() is not None:
                raise  # it exited: the failure carries its stderr
    await wait_serving(channel, popen)


def socket_of(config: Path) -> Path:
    return Path(tomllib.loads(config.read_text())["server"]["socket_path"])


def prefixed_sidecar_process(
    config: Path, env: dict[str, str], prefix: tuple[str, ...]
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*prefix, sys.executable, "-m", "sidecar", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )


def traced_child(tracer: int) -> int:
    """The pid of a tracer's one child (strace stays alive until it exits)."""
    children = Path(f"/proc/{tracer}/task/{tracer}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


async def enrollment(channel: grpc.aio.Channel, simulator: RunningSimulator) -> Any:
    subject = subject_of(simulator.app.population.examples().employee)
    stub = gateway_grpc.InsuranceGatewayStub(channel)
    return await stub.GetEnrollment(
        gateway.GetEnrollmentRequest(subject=subject), metadata=TENANT_METADATA, timeout=20
    )


async def consent(channel: grpc.aio.Channel, simulator: RunningSimulator) -> None:
    await consent_to(channel, [subject_of(simulator.app.population.examples().employee)])


def stop(process: Process) -> str:
    """SIGTERM, then the whole stderr (the process must exit 0)."""
    process.terminate()
    _, stderr = process.popen.communicate(timeout=60)
    process.stderr, process.stopped = stderr, True
    assert process.popen.returncode == 0, stderr
    return stderr


# -- 1. the whole sidecar ----------------------------------------------------------------------
@pytest.mark.slow
async def test_the_sidecar_completes_a_platform_call_with_the_key_in_the_token(
    tls_tokens: TlsTokens, short_dir: Path, tmp_path: Path
) -> None:
    async with running_simulator(pki=tls_tokens.pki, seed=3, population_size=10) as simulator:
        config = sidecar_config(
            tmp_path / "sidecar.toml",
            short_dir,
            platform=token_platform(tls_tokens, base_url(simulator)),
            hsm=tls_tokens.hsm(),
            simulator=simulator,
        )
        async with serving(config, tls_tokens.main.env()) as process:
            await consent(process.channel, simulator)
            answer = await enrollment(process.channel, simulator)
            assert answer.enrollments
            stderr = stop(process)
        assert simulator.app.calls.count("1101") == 1  # the handshake was signed by the token
    ready = [json.loads(line) for line in stderr.splitlines() if '"tls_key.token"' in line]
    assert len(ready) == 1 and ready[0]["key"].startswith("tls/"), stderr
    assert tls_tokens.pin not in stderr


# -- 2. start-up refusals ----------------------------------------------------------------------
def _refusal_case(tokens: TlsTokens, case: str) -> tuple[dict[str, Any], dict[str, Any]]:
    url = "https://127.0.0.1:9"  # never reached: start-up stops first
    pki = tokens.pki
    if case == "certificate of another key":
        return token_platform(tokens, url, cert=pki.other_client_cert), tokens.hsm()
    if case == "no such key label":
        return token_platform(tokens, url, client_key="token:tls/2099-01"), tokens.hsm()
    if case == "no such TLS token":
        return token_platform(tokens, url), tokens.hsm(tls_token_label="no-such-tls")
    if case == "TLS key beside the SM2 keys":
        return token_platform(tokens, url), tokens.hsm(own_token=False)
    assert case == "key file of another certificate"
    platform = {
        "url": url,
        "ca_file": pki.ca_cert,
        "client_cert_file": pki.client_cert,  # certifies the token key, not this file
        "client_key_file": pki.other_client_key,
    }
    return platform, tokens.hsm()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "fragments"),
    [
        (
            "certificate of another key",
            ("platform.client_cert_file", "does not certify platform.client_key tls/"),
        ),
        ("no such key label", ("platform.client_key", "tls/2099-01 not found")),
        ("no such TLS token", ("hsm.tls_token_label", "no-such-tls")),
        (
            "TLS key beside the SM2 keys",
            ("platform.client_key", "also holds sign/", "hsm.tls_token_label"),
        ),
        (
            "key file of another certificate",
            ("other-client-key.pem", "is not the key of"),
        ),
    ],
)
async def test_a_tls_identity_that_cannot_work_stops_start_up_with_one_line(
    tls_tokens: TlsTokens, short_dir: Path, tmp_path: Path, case: str, fragments: tuple[str, ...]
) -> None:
    platform, hsm = _refusal_case(tls_tokens, case)
    config = sidecar_config(tmp_path / "sidecar.toml", short_dir, platform=platform, hsm=hsm)
    process = sidecar_process(config, tls_tokens.main.env())
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2, stderr
    # The structured log lines of a start-up that got as far as the HSM, then ONE plain line.
    lines = [line for line in stderr.strip().splitlines() if not line.startswith('{"time"')]
    assert len(lines) == 1 and stderr.strip().endswith(lines[0]), stderr
    assert all(fragment in lines[0] for fragment in fragments), lines[0]
    assert tls_tokens.pin not in stderr
    assert "BEGIN" not in stderr  # no key or certificate material either
    assert not (short_dir / "sidecar.sock").exists()


# -- 3. the gateway refuses a client certificate from another CA ------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "http2"])
async def test_the_gateway_refusing_the_client_certificate_is_unavailable_and_reaches_nothing(
    tls_tokens: TlsTokens, short_dir: Path, tmp_path: Path, http2: bool
) -> None:
    async with running_simulator(pki=tls_tokens.pki, seed=3, population_size=10) as simulator:
        platform = token_platform(
            tls_tokens, base_url(simulator), cert=tls_tokens.stranger_cert, http2=http2
        )
        config = sidecar_config(
            tmp_path / "sidecar.toml",
            short_dir,
            platform=platform,
            hsm=tls_tokens.hsm(),
            simulator=simulator,
        )
        async with serving(config, tls_tokens.main.env()) as process:
            await consent(process.channel, simulator)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await enrollment(process.channel, simulator)
            stderr = stop(process)
        assert simulator.app.calls.total == 0
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    message = caught.value.details() or ""
    assert message.startswith("the insurance platform is unreachable: "), message
    # The simulator's gateway (hypercorn on asyncio) closes a refused TLS 1.3 connection without
    # an alert, after the client finished its side of the handshake and wrote the request: the
    # client cannot tell this from a gateway that died with the request, so the outcome stays
    # "maybe sent" (settlement then asks before it retries). A gateway that sends its alert, as
    # OpenSSL does, is "not sent": tests/integration/test_curl_engine_key.py.
    assert "PlatformUnreachable" not in message
    assert tls_tokens.pin not in message + stderr


# -- 4. the token vanishes while connections are pooled ----------------------------------------
class Cutter:
    """A TCP relay in front of the gateway that can cut every open connection and send new ones
    to another gateway, whose TLS session tickets the sidecar does not hold: its next request
    then needs a full handshake (a resumed TLS 1.3 session needs no client signature)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        self._writers += [writer, up_writer]

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def switch(self, port: int) -> None:
        """Cut every connection; new ones go to ``port``."""
        self.port = port
        self.cut()
        await asyncio.sleep(0.3)  # the sidecar's loop sees its idle sockets close

    def cut(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()


@contextlib.contextmanager
def token_away(directory: Path) -> Iterator[None]:
    """SoftHSM's directory of one token moved away (as a pulled token), always put back.

    Out of SoftHSM's token directory, not renamed inside it: a process started meanwhile would
    find the token under its new name (SoftHSM takes every subdirectory for a token)."""
    away = directory.parent.parent / (directory.name + ".away")
    directory.rename(away)
    try:
        yield
    finally:
        away.rename(directory)


async def health(port: int, service: str = READINESS) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
    return int(answer.status)


async def until_health(port: int, wanted: int, service: str = READINESS) -> None:
    for _ in range(200):
        if await health(port, service) == wanted:
            return
        await asyncio.sleep(0.1)
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(wanted)  # type: ignore[arg-type]
    pytest.fail(f"{service} never became {name}")


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


UNUSABLE_SECONDS = 2.0  # [server] tls_key_unusable_seconds here (30 by default)


@pytest.mark.slow
async def test_a_vanished_token_fails_new_handshakes_turns_the_probes_and_a_restart_heals(
    tls_tokens: TlsTokens, short_dir: Path, tmp_path: Path
) -> None:
    serving_status = health_pb2.HealthCheckResponse.SERVING
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    async with (
        running_simulator(pki=tls_tokens.pki, seed=3, population_size=10) as simulator,
        running_simulator(pki=tls_tokens.pki, seed=3, population_size=10) as other,
    ):
        cutter = Cutter(int(base_url(simulator).rsplit(":", 1)[1]))
        port = await cutter.start()
        probes = free_port()
        config = sidecar_config(
            tmp_path / "sidecar.toml",
            short_dir,
            platform=token_platform(tls_tokens, f"https://127.0.0.1:{port}", http2=False),
            hsm=tls_tokens.hsm(),
            simulator=simulator,
            server={
                "health_listen": f"127.0.0.1:{probes}",
                # No round of checks during the test: only the tunnel's record of the key
                # moves readiness and liveness. Readiness leaves the platform out, as in prod.
                "health_check_interval_seconds": 3600,
                "tls_key_unusable_seconds": UNUSABLE_SECONDS,
            },
        )
        env = tls_tokens.main.env()
        loop = asyncio.get_running_loop()
        try:
            async with serving(config, env) as process:
                await consent(process.channel, simulator)
                await enrollment(process.channel, simulator)
                await until_health(probes, serving_status)
                with token_away(tls_tokens.tls_dir):
                    # The pooled, already authenticated connection needs no signature.
                    assert (await enrollment(process.channel, simulator)).enrollments
                    assert await health(probes) == serving_status
                    # A connection to another gateway: a full handshake, signed in the token.
                    await cutter.switch(int(base_url(other).rsplit(":", 1)[1]))
                    with pytest.raises(grpc.aio.AioRpcError) as caught:
                        await enrollment(process.channel, simulator)  # deadline 20 s
                    failed = loop.time()
                    # The pod can open no new platform connection: out of the Service at once,
                    # but alive until the fault has lasted tls_key_unusable_seconds.
                    await until_health(probes, not_serving)
                    assert await health(probes, LIVENESS) == serving_status
                    assert loop.time() - failed < UNUSABLE_SECONDS / 2
                # Back on disk: libp11 still holds the vanished object's handle in this process.
                cutter.cut()
                with pytest.raises(grpc.aio.AioRpcError) as still:
                    await enrollment(process.channel, simulator)
                await until_health(probes, not_serving, LIVENESS)
                unusable = loop.time() - failed
                assert UNUSABLE_SECONDS - 0.5 <= unusable <= UNUSABLE_SECONDS + 3, unusable
                assert await health(probes) == not_serving
                stderr = stop(process)  # what the kubelet does when liveness keeps failing
            # Restarted while the token is still away: one line at start-up, exit 2; the
            # kubelet's back-off restarts it again later.
            with token_away(tls_tokens.tls_dir):
                refused = sidecar_process(config, env)
                _, refusal = await asyncio.to_thread(refused.communicate, timeout=120)
            assert refused.returncode == 2, refusal
            lines = [line for line in refusal.splitlines() if not line.startswith('{"time"')]
            assert len(lines) == 1 and "hsm.tls_token_label" in lines[0], refusal
            assert tls_tokens.pin not in refusal
            # Restarted once the token is back: it loads the key afresh and serves again.
            async with serving(config, env) as process:
                assert (await enrollment(process.channel, simulator)).enrollments
                await until_health(probes, serving_status)
                assert await health(probes, LIVENESS) == serving_status
                stderr += stop(process)
        finally:
            cutter.close()
        assert simulator.app.calls.count("1101") == 2 and other.app.calls.count("1101") == 1
    for failure in (caught.value, still.value):
        assert failure.code() == grpc.StatusCode.UNAVAILABLE  # at once: not DEADLINE_EXCEEDED
        message = failure.details() or ""
        assert message.startswith("the insurance platform is unreachable: cannot connect"), message
        assert "PKCS#11" in message, message  # the reason names the HSM
        assert tls_tokens.pin not in message
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    keyed = [e for e in events if str(e.get("event", "")).startswith("probes.tls_key")]
    assert [e["event"] for e in keyed] == ["probes.tls_key_unusable", "probes.tls_key_restart"]
    assert (keyed[0]["reason"], keyed[0]["error"]) == ("pkcs11", "Object handle invalid")
    assert tls_tokens.pin not in stderr
    assert "pkcs11:" not in "".join(json.dumps(e) for e in keyed)  # no URI in the events
    assert "PlatformUnreachable (sent)" not in stderr

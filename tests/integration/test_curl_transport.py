"""The libcurl transport against the real simulator over mutual TLS, and against hostile servers.

What the settlement logic relies on is checked from the wire: ``sent=False`` only when not one
request byte can have reached the gateway (refused connection, TLS or pinning failure), ``sent``
otherwise (the connection dropped after or while the request was written, an answer that never
came).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from hyperframe.frame import GoAwayFrame

from sidecar.config import PlatformConfig
from sidecar.platform.curl_transport import CurlTransport
from sidecar.platform.gateway_login import OAuth2PasswordLogin
from sidecar.platform.pinning import spki_sha256
from sidecar.platform.transport import ClientIdentity, TransportError, TransportTimeout
from yibao_devkit.devcerts import DevPki
from yibao_devkit.simulator.app import PlatformSimulator
from yibao_devkit.simulator.gateway_login import OAuth2Gate
from yibao_devkit.simulator.population import Population
from yibao_devkit.simulator.server import RunningSimulator, running_simulator

ENVELOPE = b'{"infno":"1101","msgid":""}'  # decoded (and counted) by the simulator


def curl_to(
    url: str,
    pki: DevPki,
    *,
    http2: bool = True,
    ca_file: Path | None = None,
    foreign: bool = False,
    pins: tuple[str, ...] = (),
    login: OAuth2PasswordLogin | None = None,
    max_connections: int = 20,
) -> CurlTransport:
    cert, key = (
        (pki.other_client_cert, pki.other_client_key)
        if foreign
        else (pki.client_cert, pki.client_key)
    )
    platform = PlatformConfig(
        url=url.split("/fsi/")[0],
        ca_file=ca_file or pki.ca_cert,
        client_cert_file=cert,
        client_key_file=key,
        transport="curl",
        http2=http2,
        max_connections=max_connections,
        connect_timeout_seconds=2,
        pinned_server_keys=pins,
    )
    return CurlTransport(platform, platform.ca_file, ClientIdentity(cert, key), login=login)


@contextlib.asynccontextmanager
async def using(transport: CurlTransport) -> AsyncIterator[CurlTransport]:
    try:
        yield transport
    finally:
        await transport.aclose()


def server_pin(pki: DevPki, which: Path) -> str:
    der = x509.load_pem_x509_certificate(which.read_bytes()).public_bytes(Encoding.DER)
    return spki_sha256(der)


class VersionRecorder(PlatformSimulator):
    """The simulator, noting the HTTP version of every request it receives."""

    versions: list[str]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.versions.append(scope["http_version"])
        await super().__call__(scope, receive, send)


@pytest.mark.parametrize(("http2", "version"), [(True, "2"), (False, "1.1")])
async def test_round_trips_reuse_one_connection(http2: bool, version: str) -> None:
    app = VersionRecorder(Population.generate(3, 5))
    app.versions = []
    async with (
        running_simulator(app) as simulator,
        using(curl_to(simulator.url, simulator.pki, http2=http2)) as transport,
    ):
        answers = [await transport.post(ENVELOPE, timeout=5) for _ in range(10)]
        assert await transport.probe(timeout=5) == 405
        assert transport.connections_opened() == 1  # one handshake for all eleven calls
    assert all(b'"infcode":-1' in answer for answer in answers)  # the simulator's own answers
    assert app.versions == [version] * 11
    assert app.calls.total == 10


async def test_many_concurrent_calls_share_the_loop_and_the_pool(
    simulator: RunningSimulator,
) -> None:
    async with using(curl_to(simulator.url, simulator.pki, max_connections=4)) as transport:
        answers = await asyncio.gather(*(transport.post(ENVELOPE, timeout=10) for _ in range(60)))
        assert transport.connections_opened() <= 4
    assert len(answers) == 60 and all(b"infcode" in a for a in answers)
    assert simulator.app.calls.total == 60


async def test_http1_pool_is_bounded_by_max_connections(simulator: RunningSimulator) -> None:
    async with using(
        curl_to(simulator.url, simulator.pki, http2=False, max_connections=3)
    ) as transport:
        await asyncio.gather(*(transport.post(ENVELOPE, timeout=10) for _ in range(30)))
        assert transport.connections_opened() <= 3
    assert simulator.app.calls.total == 30


async def test_a_wrong_ca_is_refused_before_anything_is_sent(simulator: RunningSimulator) -> None:
    pki = simulator.pki
    async with using(curl_to(simulator.url, pki, ca_file=pki.other_ca_cert)) as transport:
        with pytest.raises(TransportError) as caught:
            await transport.post(ENVELOPE, timeout=5)
    assert caught.value.sent is False
    assert "cannot connect to the platform" in str(caught.value)
    assert simulator.app.calls.total == 0


async def test_pinning_mismatch_is_refused_in_the_handshake(simulator: RunningSimulator) -> None:
    pki = simulator.pki
    wrong = server_pin(pki, pki.ca_cert)  # a real key, just not the gateway's
    async with using(curl_to(simulator.url, pki, pins=(wrong,))) as transport:
        with pytest.raises(TransportError) as caught:
            await transport.post(ENVELOPE, timeout=5)
    assert caught.value.sent is False
    assert "not one of the pinned keys" in str(caught.value)
    assert simulator.app.calls.total == 0
    pins = (wrong, server_pin(pki, pki.server_cert))  # rotation: current and next key
    async with using(curl_to(simulator.url, pki, pins=pins)) as transport:
        await transport.post(ENVELOPE, timeout=5)
    assert simulator.app.calls.total == 1


async def test_the_gateway_refuses_an_unknown_client_certificate(
    simulator: RunningSimulator,
) -> None:
    async with using(curl_to(simulator.url, simulator.pki, foreign=True)) as transport:
        with pytest.raises(TransportError):
            await transport.post(ENVELOPE, timeout=5)
    assert simulator.app.calls.total == 0


async def test_a_refused_connection_is_not_sent(simulator: RunningSimulator) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    async with using(curl_to(f"https://127.0.0.1:{port}", simulator.pki)) as transport:
        with pytest.raises(TransportError) as caught:
            await transport.post(ENVELOPE, timeout=5)
    assert caught.value.sent is False


async def test_a_connection_dropped_after_the_request_counts_as_sent(
    simulator: RunningSimulator,
) -> None:
    simulator.app.set_fault("1101:reset:1")
    async with using(curl_to(simulator.url, simulator.pki)) as transport:
        with pytest.raises(TransportError) as caught:
            await transport.post(ENVELOPE, timeout=5)
        assert caught.value.sent is True
        assert simulator.app.calls.total == 1  # the platform did receive it
        await transport.post(ENVELOPE, timeout=5)  # a new connection serves the next call
        assert transport.connections_opened() == 2


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def tls_server(
    pki: DevPki, handler: Handler, *, tls: bool = True, alpn: str = "http/1.1"
) -> AsyncIterator[str]:
    """A hostile gateway on 127.0.0.1 with the simulator's certificate; its base URL."""
    context: ssl.SSLContext | None = None
    if tls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca_cert))
        context.load_cert_chain(pki.server_cert, pki.server_key)
        context.verify_mode = ssl.CERT_REQUIRED
        context.set_alpn_protocols([alpn])
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"https://localhost:{port}"
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)


def reset(writer: asyncio.StreamWriter) -> None:
    """Abort with RST (SO_LINGER 0), as a crashing gateway or a middlebox does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def test_a_reset_in_the_middle_of_the_request_counts_as_sent(
    simulator: RunningSimulator,
) -> None:
    received: list[bytes] = []

    async def half_read_then_reset(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        received.append(await reader.read(200))  # part of the request head, then the reset
        reset(w)

    async with (
        tls_server(simulator.pki, half_read_then_reset) as url,
        using(curl_to(url + "/fsi/", simulator.pki, http2=False)) as transport,
    ):
        with pytest.raises(TransportError) as caught:
            await transport.post(ENVELOPE * 4000, timeout=5)  # ~100 KB: still uploading
    assert received and received[0].startswith(b"POST /fsi/api/")  # bytes did leave
    assert caught.value.sent is True


async def test_a_stalled_answer_times_out_at_the_deadline_as_sent(
    simulator: RunningSimulator,
) -> None:
    release = asyncio.Event()

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100_000)
        await release.wait()
        writer.close()

    async with (
        tls_server(simulator.pki, never_answer) as url,
        using(curl_to(url + "/fsi/", simulator.pki, http2=False)) as transport,
    ):
        # the 60 s guard only stops a hang; the transport must give up at its 0.3 s deadline
        with pytest.raises(TransportTimeout) as caught:
            await asyncio.wait_for(transport.post(ENVELOPE, timeout=0.3), 60)
        release.set()
    assert caught.value.sent is True
    assert "waiting for the platform" in str(caught.value)


async def test_a_gateway_that_never_finishes_the_handshake_is_a_timeout_not_sent(
    simulator: RunningSimulator,
) -> None:
    release = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()  # accepts TCP, never answers the ClientHello
        writer.close()

    async with (
        tls_server(simulator.pki, silent, tls=False) as url,
        using(curl_to(url + "/fsi/", simulator.pki)) as transport,
    ):
        with pytest.raises(TransportTimeout) as caught:
            await asyncio.wait_for(transport.post(ENVELOPE, timeout=0.3), 60)
        release.set()
    assert caught.value.sent is False


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
async def test_tls_1_1_is_refused(simulator: RunningSimulator) -> None:
    pki = simulator.pki
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # the server would speak TLS 1.1
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.maximum_version = ssl.TLSVersion.TLSv1_1

    async def serve_tls11(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.read(100)
        writer.close()

    server = await asyncio.start_server(serve_tls11, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        # control: this server does complete a TLS 1.1 handshake with a client that allows it
        legacy = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        legacy.load_verify_locations(pki.ca_cert)
        legacy.set_ciphers("DEFAULT:@SECLEVEL=0")
        legacy.minimum_version = ssl.TLSVersion.TLSv1
        _, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=legacy, server_hostname="localhost"
        )
        assert writer.get_extra_info("ssl_object").version() == "TLSv1.1"
        writer.close()
        async with using(curl_to(f"https://localhost:{port}/fsi/", pki)) as transport:
            with pytest.raises(TransportError) as caught:
                await transport.post(ENVELOPE, timeout=5)
    finally:
        server.close()
    assert caught.value.sent is False
    assert "cannot connect to the platform" in str(caught.value)


async def test_gateway_login_and_relogin_after_401_over_curl(tmp_path: Path) -> None:
    gate = OAuth2Gate("im-gateway", "client-secret-1", "yibao", "password-1")
    app = PlatformSimulator(Population.generate(5, 10), gateway_login=gate)
    async with running_simulator(app) as simulator:
        base = simulator.url.split("/fsi/")[0]
        login = OAuth2PasswordLogin(
            base + "/oauth/token", "im-gateway", "client-secret-1", "yibao", "password-1"
        )
        async with using(curl_to(simulator.url, simulator.pki, login=login)) as transport:
            await transport.post(ENVELOPE, timeout=5)
            await transport.post(ENVELOPE, timeout=5)
            assert gate.issued == 1  # one token for both calls
            gate.expire_all()
            await transport.post(ENVELOPE, timeout=5)
            assert gate.issued == 2  # refused with 401, logged in again, resent once
            assert transport.connections_opened() == 1  # the token travels the same pool
        wrong = OAuth2PasswordLogin(base + "/oauth/token", "im-gateway", "nope", "yibao", "x")
        async with using(curl_to(simulator.url, simulator.pki, login=wrong)) as transport:
            with pytest.raises(TransportError) as caught:
                await transport.post(ENVELOPE, timeout=5)
    assert caught.value.sent is False
    assert "gateway login failed: the token endpoint answered HTTP" in str(caught.value)
    assert "nope" not in str(caught.value)
    assert app.calls.total == 4  # three answered, one refused with 401 at the gateway


class GoawayGateway:
    """An HTTP/2 gateway that sends GOAWAY after ``max_requests`` on a connection, as nginx does.

    ``finish`` True (nginx): the streams at or below the GOAWAY's last-stream-id are still
    answered, newer ones are ignored (the client retries them elsewhere), then the connection
    closes. ``finish`` False: those streams are never answered (hypercorn 0.18 on python-h2 does
    this: h2's ``close_connection`` closes its state machine, the answers are then dropped).
    """

    def __init__(self, max_requests: int, *, finish: bool) -> None:
        self.max_requests = max_requests
        self.finish = finish
        self.goaways = 0
        self.answered = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        connection.initiate_connection()
        writer.write(connection.data_to_send())
        accepted: set[int] = set()
        last: list[int] = []  # the GOAWAY's last-stream-id, once sent
        tasks: set[asyncio.Task[None]] = set()

        async def answer(stream_id: int) -> None:
            await asyncio.sleep(0.001)  # let streams overlap on the connection
            if last and not self.finish:
                return
            connection.send_headers(stream_id, [(b":status", b"200"), (b"content-length", b"2")])
            connection.send_data(stream_id, b"{}", end_stream=True)
            writer.write(connection.data_to_send())
            self.answered += 1
            accepted.discard(stream_id)
            if last and not accepted:
                writer.close()

        with contextlib.suppress(ConnectionError, ssl.SSLError, h2.exceptions.ProtocolError):
            while data := await reader.read(65536):
                for event in connection.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        if last and event.stream_id > last[0]:
                            continue  # refused by the GOAWAY
                        accepted.add(event.stream_id)
                        if len(accepted) + self.answered >= self.max_requests and not last:
                            last.append(event.stream_id)
                            writer.write(connection.data_to_send())
                            frame = GoAwayFrame(0, last_stream_id=event.stream_id, error_code=0)
                            writer.write(frame.serialize())
                            self.goaways += 1
                    elif isinstance(event, h2.events.StreamEnded) and event.stream_id in accepted:
                        task = asyncio.create_task(answer(event.stream_id))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                writer.write(connection.data_to_send())
        for task in list(tasks):
            task.cancel()
        writer.close()


async def test_goaway_after_n_requests_leaves_no_call_waiting(
    simulator: RunningSimulator,
) -> None:
    """Regression (HTTP/2 GOAWAY stall): a gateway recycling connections every few requests;
    every call ends, answered or with a clean error, long before its own 30 s deadline."""
    gateway = GoawayGateway(max_requests=15, finish=True)
    outcomes: list[bytes | TransportError] = []
    pki = simulator.pki
    async with (
        tls_server(pki, gateway, alpn="h2") as url,
        using(curl_to(url + "/fsi/", pki)) as transport,
    ):

        async def caller() -> None:
            for _ in range(20):
                try:
                    outcomes.append(await transport.post(ENVELOPE, timeout=30))
                except TransportError as exc:
                    outcomes.append(exc)

        # a stall would hold calls until their 30 s deadline: the 20 s guard fails the test
        await asyncio.wait_for(asyncio.gather(*(caller() for _ in range(8))), 20)
        opened = transport.connections_opened()
    assert len(outcomes) == 160
    assert gateway.goaways >= 5 and opened >= 5  # connections were recycled over and over
    answered = [o for o in outcomes if isinstance(o, bytes)]
    assert answered and all(a == b"{}" for a in answered)
    failed = [o for o in outcomes if isinstance(o, TransportError)]
    assert all(o.sent and not isinstance(o, TransportTimeout) for o in failed)


async def test_a_goaway_that_abandons_its_streams_ends_at_the_callers_deadline(
    simulator: RunningSimulator,
) -> None:
    """A gateway that never answers the streams its GOAWAY covers: nothing to retry, the calls
    end as timeouts (sent: they reached the gateway) at their own deadline, not later."""
    gateway = GoawayGateway(max_requests=4, finish=False)
    pki = simulator.pki
    async with (
        tls_server(pki, gateway, alpn="h2") as url,
        using(curl_to(url + "/fsi/", pki)) as transport,
    ):
        calls = (transport.post(ENVELOPE, timeout=0.5) for _ in range(4))
        outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 60)
    assert gateway.goaways == 1
    assert all(isinstance(o, TransportTimeout) and o.sent for o in outcomes)

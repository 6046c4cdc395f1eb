"""Serving the simulator over HTTPS with mutual TLS, like the platform's gateway.

Hypercorn terminates TLS (1.2 minimum, HTTP/2 and HTTP/1.1 offered via ALPN) and demands a client
certificate issued by the development "platform" CA: a client without one, or with one from any
other CA, is refused during the handshake. (With TLS 1.3 the client learns of the refusal on its
first read, so a client library reports it on the first request.)

The listening socket is created and bound here, before Hypercorn starts, so that port 0 works: the
bound port is known and reported before ``ready`` is set, and the socket already listens, so a
client that connects right after ``ready`` is queued rather than refused.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import signal
import ssl
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from yibao_devkit import devcerts
from yibao_devkit.devcerts import DevPki
from yibao_devkit.simulator import hosting
from yibao_devkit.simulator.app import ENDPOINT_PATH, PlatformSimulator
from yibao_devkit.simulator.faults import parse as parse_fault
from yibao_devkit.simulator.population import Population
from yibao_devkit.simulator.security import MessageSecurity
from yibao_devkit.simulator.transactions import default_registry

LOG = logging.getLogger(__name__)
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 - recognised, not bound by default


@dataclass(frozen=True)
class Listening:
    """Where a started simulator accepts connections."""

    host: str
    port: int

    @property
    def url(self) -> str:
        """The base URL, e.g. ``https://127.0.0.1:9443``."""
        host = "localhost" if self.host in _WILDCARD_HOSTS else self.host
        return f"https://{_bracketed(host)}:{self.port}"

    @property
    def endpoint(self) -> str:
        """The full URL of the transaction endpoint."""
        return self.url + ENDPOINT_PATH


async def serve(
    app: PlatformSimulator,
    *,
    host: str,
    port: int,
    pki: DevPki,
    ready: asyncio.Event | None = None,
    shutdown: asyncio.Event | None = None,
    on_listening: Callable[[Listening], None] | None = None,
    graceful_timeout: float = 3.0,
) -> None:
    """Serve ``app`` with mutual TLS until ``shutdown`` is set (or SIGINT/SIGTERM if ``None``).

    ``on_listening`` receives the bound address (the real port when ``port`` is 0) just before
    ``ready`` is set.
    """
    config = hosting.mutual_tls_config(
        bind=f"{_bracketed(host)}:{port}",
        certfile=str(pki.server_cert),
        keyfile=str(pki.server_key),
        ca_certs=str(pki.ca_cert),
        graceful_timeout=graceful_timeout,
    )
    config.errorlog = LOG
    sockets = config.create_sockets().secure_sockets
    try:
        for sock in sockets:
            sock.listen(config.backlog)
        bound_host, bound_port = sockets[0].getsockname()[:2]
        if on_listening is not None:
            on_listening(Listening(host=str(bound_host), port=int(bound_port)))
        if ready is not None:
            ready.set()
        await hosting.host(app, config, sockets, shutdown.wait if shutdown else _signalled)
    finally:
        for sock in sockets:
            sock.close()


async def _signalled() -> None:
    """Return on the first SIGINT or SIGTERM."""
    received = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, received.set)
    try:
        await received.wait()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@dataclass(frozen=True)
class RunningSimulator:
    """A simulator serving in the background of the current event loop."""

    app: PlatformSimulator
    pki: DevPki
    listening: Listening

    @property
    def url(self) -> str:
        return self.listening.url

    @property
    def endpoint(self) -> str:
        return self.listening.endpoint

    @property
    def port(self) -> int:
        return self.listening.port

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts the dev CA and presents the sidecar's certificate."""
        context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        context.load_cert_chain(str(self.pki.client_cert), str(self.pki.client_key))
        return context


@contextlib.asynccontextmanager
async def running_simulator(
    app: PlatformSimulator | None = None,
    *,
    pki: DevPki | None = None,
    seed: int = 42,
    population_size: int = 200,
    host: str = "127.0.0.1",
) -> AsyncIterator[RunningSimulator]:
    """Run a simulator on a free port for the duration of the ``async with`` block.

    Without ``app`` a fresh simulator over ``Population.generate(seed, population_size)`` is
    used; without ``pki`` a development PKI is generated in a temporary directory.
    """
    with contextlib.ExitStack() as stack:
        if pki is None:
            pki = devcerts.generate(Path(stack.enter_context(tempfile.TemporaryDirectory())))
        if app is None:
            app = PlatformSimulator(Population.generate(seed, population_size))
        ready = asyncio.Event()
        shutdown = asyncio.Event()
        bound: list[Listening] = []
        task = asyncio.create_task(
            serve(
                app,
                host=host,
                port=0,
                pki=pki,
                ready=ready,
                shutdown=shutdown,
                on_listening=bound.append,
                graceful_timeout=0.5,
            )
        )
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.is_set():
            waiter.cancel()
            task.result()  # raises why the server could not start
            raise RuntimeError("the simulator stopped before it was ready")
        try:
            yield RunningSimulator(app=app, pki=pki, listening=bound[0])
        finally:
            shutdown.set()
            await task


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) as a host and a port."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {listen!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise ValueError(f"expected HOST:PORT, got {listen!r}")
    return host, int(port_text)


def server_names_for(host: str) -> Sequence[str]:
    """The names the server certificate must carry for clients connecting to ``host``."""
    names = ["localhost", "127.0.0.1"]
    if host not in _WILDCARD_HOSTS and host not in names:
        names.append(host)
    return names


def run(
    listen: str,
    seed: int,
    pki_dir: Path,
    population_size: int,
    *,
    faults: Sequence[str] = (),
    aliases: Sequence[str] = (),
    second_confirmation: str | None = None,
    security: MessageSecurity | None = None,
    ec_tokens_for: Sequence[str] = (),
) -> int:
    """The ``yibao-sidecar simulate`` command: serve until SIGINT or SIGTERM; the exit status.

    ``faults`` are switches in their command-line form (``2207:commit-then-drop:1``, see
    :func:`yibao_devkit.simulator.faults.parse`); ``aliases`` map a region's code variant to a
    transaction (``2501A=2501``); ``second_confirmation`` names the 2207 input field that must
    carry the settlement's confirmation code (off when ``None``); ``security`` is the message
    security (plain JSON when ``None``).

    Prints one line each: the endpoint URL, then the CA certificate and the client certificate
    and key that an integrator's client should use; with scheme A or B also the platform's SM2
    public key (hex of 04||X||Y, its Base64, and the path of a PEM copy in ``pki_dir``).
    For each resident ID in ``ec_tokens_for`` (a demo's stand-in for scanning the person's QR
    code) it prints ``ec_token_<ID>: <token>``, valid for a few minutes, before the key lines.
    """
    try:
        host, port = parse_listen(listen)
    except ValueError as problem:
        print(f"error: --listen: {problem}", file=sys.stderr)
        return 2
    try:
        switches = [parse_fault(spec) for spec in faults]
        registry = default_registry(dict(_alias(text) for text in aliases))
    except (ValueError, KeyError) as problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    pki = devcerts.generate(pki_dir, server_names=server_names_for(host))
    app = PlatformSimulator(
        Population.generate(seed, population_size), transactions=registry, security=security
    )
    for certno in ec_tokens_for:
        person = app.population.find(certno)
        if person is None or not person.enrolled:
            print(f"error: --issue-ec-token: no enrolled person with ID {certno}", file=sys.stderr)
            return 2
    platform_key = getattr(security, "platform_public_key", None)
    pem_path = pki_dir / "platform-sm2-public.pem"
    if platform_key is not None:
        pem_path.write_text(platform_key.pem(), encoding="ascii")
    for infno, fault in switches:
        app.faults.set(infno, fault)
    if second_confirmation:
        app.confirmation.require(second_confirmation)

    def announce(listening: Listening) -> None:
        print(f"url: {listening.endpoint}", flush=True)
        print(f"ca_cert: {pki.ca_cert}", flush=True)
        print(f"client_cert: {pki.client_cert}", flush=True)
        print(f"client_key: {pki.client_key}", flush=True)
        for certno in ec_tokens_for:
            print(f"ec_token_{certno}: {app.issue_ec_token(certno)}", flush=True)
        if platform_key is not None:
            point = platform_key.point()
            print(f"platform_public_key: {point.hex().upper()}", flush=True)
            print(f"platform_public_key_base64: {base64.b64encode(point).decode()}", flush=True)
            print(f"platform_public_key_pem: {pem_path}", flush=True)

    try:
        asyncio.run(serve(app, host=host, port=port, pki=pki, on_listening=announce))
    except OSError as problem:
        print(f"error: cannot listen on {listen}: {problem}", file=sys.stderr)
        return 1
    return 0


def _alias(text: str) -> tuple[str, str]:
    """``CODE=CANONICAL`` (e.g. ``2501A=2501``) as a pair."""
    code, sep, canonical = text.partition("=")
    if not sep or not code or not canonical:
        raise ValueError(f"--alias: expected CODE=CANONICAL, got {text!r}")
    return code, canonical

"""Hypercorn hosting with a shutdown that cannot stall.

Hypercorn's own ``worker_serve`` closes each connection by waiting for the peer's TLS
``close_notify``; a client that keeps an idle pooled connection and never reads (the normal state
of an HTTP/2 client between requests) makes every shutdown wait asyncio's 30-second TLS shutdown
timeout, and Hypercorn swallows the cancellation meant to cut that short. Tests and fault drills
stop and start the simulator while the sidecar's client is alive, so this module runs Hypercorn's
connection handler (``TCPServer``) itself: it keeps hold of every transport, lets in-flight
requests finish for ``graceful_timeout``, then aborts whatever is left.

Holding every transport also lets fault drills drop a connection on purpose: the app asks for it
by sending the ASGI extension event :data:`~yibao_devkit.simulator.app.DROP_CONNECTION`, and
:func:`_with_drop` aborts the transport the request arrived on (found by the peer address that
Hypercorn puts in the scope's ``client``), so the client sees the connection reset with no answer.

``TCPServer``, ``WorkerContext`` and ``Lifespan`` are Hypercorn internals, so this module refuses,
in one line and before importing them, a Hypercorn outside the range it was tested with.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from typing import Any, cast

TESTED_HYPERCORN = ((0, 17), (0, 19))  # [lower, upper): devkit/pyproject.toml allows the same


class UntestedHypercorn(ImportError):
    """The installed Hypercorn is outside the range whose internals this module was tested with."""


def check_hypercorn(installed: str) -> None:
    match = re.match(r"\d+(?:\.\d+)*", installed)
    release = tuple(int(part) for part in match.group(0).split(".")) if match else ()
    lower, upper = TESTED_HYPERCORN
    if not lower <= release < upper:
        raise UntestedHypercorn(
            f"hypercorn {installed} is outside the tested range >=0.17,<0.19 (the simulator's "
            "hosting uses its TCPServer, WorkerContext and Lifespan internals); install the "
            "version constraints.txt pins"
        )


check_hypercorn(version("hypercorn"))

from hypercorn.asyncio.lifespan import Lifespan  # noqa: E402 - only once the version is checked
from hypercorn.asyncio.statsd import StatsdLogger  # noqa: E402
from hypercorn.asyncio.tcp_server import TCPServer  # noqa: E402
from hypercorn.asyncio.worker_context import WorkerContext  # noqa: E402
from hypercorn.config import Config  # noqa: E402
from hypercorn.typing import ASGIFramework, LifespanState  # noqa: E402
from hypercorn.utils import parse_socket_addr, wrap_app  # noqa: E402

from yibao_devkit.simulator.app import (  # noqa: E402
    DROP_CONNECTION,
    Message,
    PlatformSimulator,
    Receive,
    Scope,
    Send,
)

TLS_SHUTDOWN_TIMEOUT = 1.0  # seconds to wait for a peer's close_notify before dropping it


async def host(
    app: PlatformSimulator,
    config: Config,
    sockets: list[socket.socket],
    shutdown_trigger: Callable[[], Awaitable[object]],
) -> None:
    """Serve ``app`` on the bound, listening ``sockets`` until ``shutdown_trigger`` returns."""
    loop = asyncio.get_running_loop()
    config.set_statsd_logger_class(StatsdLogger)
    by_peer: dict[Any, asyncio.StreamWriter] = {}
    droppable = _with_drop(app, by_peer)
    wrapped = wrap_app(cast(ASGIFramework, droppable), config.wsgi_max_body_size, "asgi")
    state: LifespanState = {}
    lifespan = Lifespan(wrapped, config, loop, state)
    lifespan_task = loop.create_task(lifespan.handle_lifespan())
    await lifespan.wait_for_startup()

    context = WorkerContext(None)
    tls = config.create_ssl_context()
    connections: set[asyncio.Task[None]] = set()
    writers: set[asyncio.StreamWriter] = set()

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = cast("asyncio.Task[None]", asyncio.current_task())
        connections.add(task)
        writers.add(writer)
        peer = _peer(writer)
        by_peer[peer] = writer
        try:
            await TCPServer(wrapped, loop, config, context, state, reader, writer)
        finally:
            connections.discard(task)
            writers.discard(writer)
            if by_peer.get(peer) is writer:
                del by_peer[peer]

    servers = [
        await asyncio.start_server(
            on_connection,
            sock=sock,
            ssl=tls,
            backlog=config.backlog,
            ssl_handshake_timeout=config.ssl_handshake_timeout if tls else None,
            ssl_shutdown_timeout=TLS_SHUTDOWN_TIMEOUT if tls else None,
        )
        for sock in sockets
    ]
    try:
        await shutdown_trigger()
    finally:
        app.release_held()
        await context.terminated.set()  # tells idle connections to close
        for server in servers:
            server.close()
        if connections:
            await asyncio.wait(set(connections), timeout=config.graceful_timeout)
        for writer in list(writers):
            writer.transport.abort()
        if connections:
            await asyncio.wait(set(connections), timeout=TLS_SHUTDOWN_TIMEOUT)
        await lifespan.wait_for_shutdown()
        lifespan_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await lifespan_task


def _peer(writer: asyncio.StreamWriter) -> Any:
    """The peer address in the form Hypercorn gives the scope's ``client``."""
    sock = writer.get_extra_info("socket")
    try:
        return parse_socket_addr(sock.family, sock.getpeername())
    except OSError:
        return None


def _with_drop(
    app: PlatformSimulator, by_peer: dict[Any, asyncio.StreamWriter]
) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """``app`` with the drop-connection extension: the event aborts the request's transport."""

    async def droppable(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        writer = by_peer.get(scope.get("client"))
        extensions = dict(scope.get("extensions") or {})
        if writer is not None:
            extensions[DROP_CONNECTION] = {}

        async def send_or_drop(message: Message) -> None:
            if message["type"] == DROP_CONNECTION:
                assert writer is not None
                writer.transport.abort()
            else:
                await send(message)

        await app({**scope, "extensions": extensions}, receive, send_or_drop)

    return droppable


def mutual_tls_config(
    *, bind: str, certfile: str, keyfile: str, ca_certs: str, graceful_timeout: float
) -> Config:
    """Hypercorn settings: TLS 1.2+, HTTP/2 and HTTP/1.1 by ALPN, client certificate required."""
    config = Config()
    config.bind = [bind]
    config.certfile = certfile
    config.keyfile = keyfile
    config.ca_certs = ca_certs
    config.verify_mode = ssl.CERT_REQUIRED
    config.alpn_protocols = ["h2", "http/1.1"]
    config.graceful_timeout = graceful_timeout
    config.accesslog = None
    # Behave like the nginx gateways in front of the platform: idle connections live 75 s
    # (hypercorn's own 5 s idle limit would cut clients' pooled connections under them, which no
    # real gateway does). No cap on requests per connection: nginx answers the streams its GOAWAY
    # still covers, but hypercorn's cap (keep_alive_max_requests) locks the HTTP/2 connection
    # after its GOAWAY and drops those answers, so the client waits out its deadline for them.
    # The transport's handling of a real GOAWAY is tested against a gateway that does what nginx
    # does (tests/integration/test_curl_transport.py).
    config.keep_alive_timeout = 75.0
    config.keep_alive_max_requests = 2**62
    return config

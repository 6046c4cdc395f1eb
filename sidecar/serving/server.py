"""The gRPC server: where it listens, what it always offers, and how it stops.

It listens on a Unix domain socket (the IM container in the same pod) and optionally on a
mutual-TLS TCP port; offers the standard health and reflection services next to the sidecar's own;
bounds message sizes and concurrent RPCs; and on SIGTERM stops taking new calls, marks itself
NOT_SERVING, and drains the calls in flight within the grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from sidecar.config import ServerConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Registration:
    """A service to serve: its full name and how to add it to a server."""

    name: str
    add_to: Callable[[grpc.aio.Server], None]


class UnixFront(Protocol):
    """Accepts on the public Unix socket itself and forwards to gRPC's ``upstream`` address."""

    @property
    def upstream(self) -> str: ...

    async def start(self, public_path: Path) -> None: ...

    def stop_accepting(self) -> None: ...

    async def close(self) -> None: ...


class Server:
    """A started gRPC server and its health state.

    ``config`` is ``[server]`` as pydantic validated it: the socket and its mode, the TCP
    listener, message and concurrency bounds, the grace period. ``tcp_credentials`` are the mutual
    TLS the composition root built from ``[server.tls]`` (None: plaintext, development only);
    ``front`` accepts on the socket in gRPC's place (e.g. sidecar/access/front.py).
    """

    def __init__(
        self,
        services: Sequence[Registration],
        config: ServerConfig,
        *,
        tcp_credentials: grpc.ServerCredentials | None = None,
        front: UnixFront | None = None,
        interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]] = (),
    ) -> None:
        self._services = tuple(services)
        self._config = config
        self._tcp_credentials = tcp_credentials
        self._front = front
        self._grace = config.grace_period_seconds
        self._server = grpc.aio.server(
            interceptors=tuple(interceptors),
            maximum_concurrent_rpcs=config.max_concurrent_rpcs,
            options=[
                ("grpc.max_receive_message_length", config.max_message_bytes),
                ("grpc.max_send_message_length", config.max_message_bytes),
                ("grpc.so_reuseport", 0),
            ],
        )
        # grpc-stubs has no type for the asyncio health servicer.
        self.health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self.tcp_port: int | None = None

    @property
    def front(self) -> UnixFront | None:
        """The peer-credential front accepting on the socket in gRPC's place, if any."""
        return self._front

    async def start(self) -> None:
        for service in self._services:
            service.add_to(self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        names = [s.name for s in self._services]
        reflection.enable_server_reflection(
            [
                *names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            self._server,
        )
        front, socket_path = self._front, self._config.socket_path
        _prepare_socket_path(socket_path)
        self._bind(front.upstream if front else f"unix:{socket_path}")
        if self._config.tcp_listen:
            self.tcp_port = self._bind(self._config.tcp_listen, self._tcp_credentials)
        await self._server.start()
        if front is not None:
            await front.start(socket_path)
        os.chmod(socket_path, self._config.socket_mode)
        for name in ("", *names):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "server.started",
            extra={
                "socket": str(socket_path),
                "tcp_port": self.tcp_port,
                "tcp_mutual_tls": self._tcp_credentials is not None,
                "access_control": front is not None,
            },
        )

    def _bind(self, address: str, credentials: grpc.ServerCredentials | None = None) -> int:
        try:
            if credentials is not None:
                return self._server.add_secure_port(address, credentials)
            return self._server.add_insecure_port(address)
        except RuntimeError:  # grpc's only signal: "Failed to bind to address ..."
            raise OSError(f"cannot listen on {address}") from None

    async def stop(self) -> None:
        """Refuse new calls, report NOT_SERVING, let calls in flight finish within the grace."""
        await self.health.enter_graceful_shutdown()
        log.info("server.draining", extra={"grace_seconds": self._grace})
        if self._front is not None:
            self._front.stop_accepting()
        await self._server.stop(self._grace)
        if self._front is not None:
            await self._front.close()
        with contextlib.suppress(FileNotFoundError):
            self._config.socket_path.unlink()
        log.info("server.stopped")

    async def wait_for_termination(self) -> None:
        await self._server.wait_for_termination()


class SocketInUse(OSError):
    """Something accepts connections on the socket path: another sidecar is serving there."""


def _prepare_socket_path(path: Path) -> None:
    """Remove a stale socket left by a killed predecessor; never a live one, nor anything else.

    A socket file is stale when connecting to it is refused; if something accepts (or the probe
    cannot tell), the path belongs to a running process and starting here would silently take
    its callers away, so this start is refused instead.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(f"{path} exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2.0)
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            path.unlink(missing_ok=True)  # stale: nobody listens
            return
        except OSError as exc:
            raise SocketInUse(
                f"{path}: cannot tell whether another process serves on it "
                f"({exc.strerror or exc}); not taking it over"
            ) from None
    raise SocketInUse(
        f"{path}: another process is listening on it (a second sidecar?); stop it or set "
        "a different server.socket_path"
    )


def event_loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop factory for ``[server] event_loop`` (None: asyncio's own loop).

    grpc.aio runs on whichever asyncio loop is running; uvloop (libuv) costs less CPU per call
    (docs/performance.md).
    """
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    if name == "asyncio":
        return None
    raise ValueError(f"unknown event loop {name!r}")


async def serve_until_signalled(
    server: Server,
    on_stop: Callable[[], Any] | None = None,
    on_signal: Callable[[], Any] | None = None,
    on_started: Callable[[], Any] | None = None,
) -> None:
    """Run ``server`` until SIGTERM or SIGINT, then drain it; the hooks run around that.

    ``on_started`` once the listeners are up, ``on_signal`` when the signal arrives (before the
    drain), ``on_stop`` after it.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await server.start()
    await _run_hook(on_started)
    await stop.wait()
    log.info("server.signal_received")
    await _run_hook(on_signal)
    await server.stop()
    await _run_hook(on_stop)


async def _run_hook(hook: Callable[[], Any] | None) -> None:
    if hook is not None:
        result = hook()
        if asyncio.iscoroutine(result):
            await result

"""The peer-credential front: the sidecar's own accept loop on the public Unix socket.

gRPC Python does not expose a Unix-socket caller's kernel credentials: the auth context of a UDS
connection (also with ``local_server_credentials``) holds only the security level, and
``context.peer()`` is ``"unix:"`` for a client socket without a name. So the sidecar accepts
callers itself, reads ``SO_PEERCRED`` once per connection, and forwards the connection's bytes to
gRPC's listener on a private socket inside a fresh 0700 directory.

The identity reaches the RPC through the one thing gRPC does report: the *client* address of the
connection it accepted. The front binds each upstream socket to a unique name in Linux's abstract
namespace (``yibao-sidecar/<128 random bits>/<connection number>``) before connecting, and keeps
name → credentials while the connection lives; the access filter looks ``context.peer()``
(``"unix-abstract:<name>"``) up here. A name the front did not register has no identity, so a
process that reached the private listener directly (only the sidecar's own uid can open the
0700 directory) is refused like any unknown caller, and a name is never reused.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import shutil
import socket
import tempfile
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, cast

from sidecar.access.peer import UnixPeer, peer_credentials

log = logging.getLogger(__name__)

_ABSTRACT = "unix-abstract:"


class PeerCredentialFront:
    """Accepts on ``public_path``, forwards to gRPC on ``upstream``, remembers who connected."""

    def __init__(self, private_parent: Path | None = None) -> None:
        # mkdtemp makes the directory 0700 and owned by us; nothing else may connect inside it.
        self._dir = Path(tempfile.mkdtemp(prefix="yibao-grpc-", dir=private_parent))
        self._private_socket = self._dir / "grpc.sock"
        self._prefix = f"yibao-sidecar/{secrets.token_hex(16)}/"
        self._numbers = itertools.count(1)
        self._peers: dict[str, UnixPeer] = {}
        self._pipes: set[_Pipe] = set()
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def upstream(self) -> str:
        """The address gRPC must listen on (``unix:`` + a path in the private directory)."""
        return f"unix:{self._private_socket}"

    def lookup(self, grpc_peer: str) -> UnixPeer | None:
        """The kernel credentials behind gRPC's ``context.peer()``, if the front made the call."""
        if not grpc_peer.startswith(_ABSTRACT):
            return None
        return self._peers.get(grpc_peer[len(_ABSTRACT) :])

    @property
    def connections(self) -> int:
        return len(self._pipes)

    async def start(self, public_path: Path) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(
            lambda: _Downstream(self), path=str(public_path)
        )

    def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()

    async def close(self) -> None:
        """Stop accepting, end every forwarded connection, remove the private directory."""
        self.stop_accepting()
        for task in list(self._tasks):
            task.cancel()
        for pipe in list(self._pipes):
            pipe.close()
        if self._server is not None:
            await self._server.wait_closed()
        shutil.rmtree(self._dir, ignore_errors=True)

    # -- the pipes' side --------------------------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _bind_upstream(self, pipe: _Pipe, peer: UnixPeer) -> socket.socket:
        """A socket holding a fresh abstract name, registered as ``peer`` only once it is ours.

        The kernel lets one socket at a time hold an abstract name, so a name in the registry is
        always held by the front's own upstream socket: a process that bound it first (it could
        read the names in /proc/net/unix and guess the next number) makes this bind fail and
        never gets the name registered.
        """
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            name = f"{self._prefix}{next(self._numbers)}"
            upstream.bind("\0" + name)
            upstream.setblocking(False)
        except BaseException:
            upstream.close()
            raise
        pipe.name = name
        self._peers[name] = peer
        self._pipes.add(pipe)
        return upstream

    def _closed(self, pipe: _Pipe) -> None:
        self._pipes.discard(pipe)
        if pipe.name is not None:
            self._peers.pop(pipe.name, None)


class _Pipe:
    """One caller's connection: the downstream transport, the upstream one, and the name."""

    def __init__(self, front: PeerCredentialFront) -> None:
        self.front = front
        self.name: str | None = None
        self.downstream: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        # What the caller sent before the upstream was connected: uvloop may deliver the first
        # bytes although connection_made paused reading.
        self.early: list[bytes] = []
        self._closed = False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Forget the name before the socket goes, so a call still in flight fails closed.
        self.front._closed(self)
        for transport in (self.downstream, self.upstream):
            if transport is not None:
                transport.close()

    async def connect(self, peer: UnixPeer) -> None:
        if self._closed:  # the caller left before this task ran
            return
        sock: socket.socket | None = None
        try:
            sock = self.front._bind_upstream(self, peer)
            loop = asyncio.get_running_loop()
            await loop.sock_connect(sock, str(self.front._private_socket))
            transport, _ = await loop.create_connection(lambda: _Upstream(self), sock=sock)
        except BaseException as exc:  # OSError, or cancelled by close()
            if sock is not None:
                sock.close()
            self.close()
            if isinstance(exc, OSError):
                log.error("access.front.upstream_failed", extra={"error": type(exc).__name__})
                return
            raise
        if self._closed:  # the caller left while we connected
            transport.close()
            return
        self.upstream = transport
        transport.writelines(self.early)
        self.early.clear()
        assert self.downstream is not None
        self.downstream.resume_reading()


class _Half(asyncio.Protocol):
    """Copies what one side receives to the other side, with back-pressure both ways."""

    def __init__(self, pipe: _Pipe) -> None:
        self.pipe = pipe

    def _other(self) -> asyncio.Transport | None:
        raise NotImplementedError

    def data_received(self, data: bytes) -> None:
        other = self._other()
        if other is not None:
            other.write(data)
        else:  # the caller's first bytes, before the upstream exists: hold them, read no more
            self.pipe.early.append(data)
            if self.pipe.downstream is not None:
                self.pipe.downstream.pause_reading()

    def eof_received(self) -> bool:
        self.pipe.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.pipe.close()

    # Our transport's write buffer is full: stop reading from the other side until it drains.
    def pause_writing(self) -> None:
        other = self._other()
        if other is not None:
            other.pause_reading()

    def resume_writing(self) -> None:
        other = self._other()
        if other is not None and not other.is_closing():
            other.resume_reading()


class _Downstream(_Half):
    def __init__(self, front: PeerCredentialFront) -> None:
        super().__init__(_Pipe(front))

    def _other(self) -> asyncio.Transport | None:
        return self.pipe.upstream

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A duck-typed stream transport: uvloop's are not subclasses of asyncio.Transport.
        transport = cast(asyncio.Transport, transport)
        self.pipe.downstream = transport
        transport.pause_reading()  # nothing is forwarded before the upstream exists
        sock = transport.get_extra_info("socket")
        try:
            peer = peer_credentials(sock)
        except OSError:
            transport.close()
            return
        self.pipe.front._spawn(self.pipe.connect(peer))


class _Upstream(_Half):
    def _other(self) -> asyncio.Transport | None:
        return self.pipe.downstream

"""Taking the shared store away from a running sidecar, for real, on either back end.

SQLite: the store is closed and its directory replaced by a file, so it cannot be opened again.
PostgreSQL: the sidecar reaches the server through a TCP proxy that the test cuts (listener and
every live connection), as a network partition or a stopped server would.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from psycopg.conninfo import conninfo_to_dict

from sidecar.config import StoreConfig
from sidecar.store import Store


@dataclass
class TcpProxy:
    target_host: str
    target_port: int
    port: int = 0
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self) -> None:
        """Stop accepting and drop every connection: the store is unreachable from now on."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()


@dataclass
class StoreUnderTest:
    """The store configuration a test sidecar uses, and the way to take it down."""

    config: StoreConfig
    proxy: TcpProxy | None = None
    direct_dsn: str | None = None  # PostgreSQL without the proxy, for the test's own queries

    async def take_down(self, store: Store) -> None:
        if self.proxy is not None:
            await self.proxy.cut()
            return
        await store.close()
        directory = self.config.sqlite_path.parent
        directory.rename(directory.with_name(directory.name + ".gone"))
        directory.write_text("the store's directory is gone")


@contextlib.asynccontextmanager
async def store_under_test(config: StoreConfig) -> AsyncIterator[StoreUnderTest]:
    if config.backend == "sqlite":
        yield StoreUnderTest(config)
        return
    assert config.postgresql_dsn is not None
    target = conninfo_to_dict(config.postgresql_dsn)
    proxy = TcpProxy(str(target.get("host", "127.0.0.1")), int(target.get("port", 5432)))
    await proxy.start()
    dsn = f"{config.postgresql_dsn} host=127.0.0.1 port={proxy.port}"  # the last value wins
    # A short connect timeout: an outage is noticed in a second, not in five.
    proxied = config.model_copy(update={"postgresql_dsn": dsn, "connect_timeout_seconds": 1.0})
    try:
        yield StoreUnderTest(proxied, proxy, config.postgresql_dsn)
    finally:
        await proxy.cut()

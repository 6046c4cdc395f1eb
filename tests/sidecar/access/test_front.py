"""The peer-credential front forwards every byte on either event loop ([server] event_loop).

uvloop may hand the front a caller's first bytes although ``connection_made`` paused reading; a
front that dropped them broke every connection's HTTP/2 preface under uvloop (the dev pod's IM
container got "Socket closed"). The upstream here is a plain echo server on the front's private
socket, so what comes back is exactly what went through both ways.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import uvloop

from sidecar.access.front import PeerCredentialFront

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def through_the_front(directory: Path, payloads: list[bytes]) -> list[bytes]:
    front = PeerCredentialFront(private_parent=directory)
    upstream = await asyncio.start_unix_server(echo, path=front.upstream.removeprefix("unix:"))
    public = directory / "public.sock"
    await front.start(public)
    try:
        answers = []
        for payload in payloads:
            reader, writer = await asyncio.open_unix_connection(str(public))
            writer.write(payload)  # at once: before the front can have its upstream
            await writer.drain()
            answers.append(await reader.readexactly(len(payload)))
            writer.close()
            await writer.wait_closed()
        return answers
    finally:
        await front.close()
        upstream.close()
        await upstream.wait_closed()


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_the_first_bytes_and_everything_after_them_arrive(loop: str, tmp_path: Path) -> None:
    payloads = [b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", os.urandom(1 << 20), b"x"]
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        answers = runner.run(asyncio.wait_for(through_the_front(tmp_path, payloads), 20))
    assert answers == payloads


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_the_callers_identity_is_known_while_its_connection_lives(
    loop: str, tmp_path: Path
) -> None:
    async def scenario() -> tuple[int, int]:
        front = PeerCredentialFront(private_parent=tmp_path)
        names: list[str] = []

        async def remember(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            names.append(sock.getpeername())
            await echo(reader, writer)

        path = front.upstream.removeprefix("unix:")
        upstream = await asyncio.start_unix_server(remember, path=path)
        await front.start(tmp_path / "public.sock")
        try:
            reader, writer = await asyncio.open_unix_connection(str(tmp_path / "public.sock"))
            writer.write(b"hello")
            await reader.readexactly(5)
            name = names[0]
            name = name.decode() if isinstance(name, bytes) else name
            peer = front.lookup("unix-abstract:" + name.lstrip("\0"))
            writer.close()
            await writer.wait_closed()
            assert peer is not None
            return peer.uid, peer.pid
        finally:
            await front.close()
            upstream.close()

    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        uid, pid = runner.run(asyncio.wait_for(scenario(), 20))
    assert (uid, pid) == (os.getuid(), os.getpid())

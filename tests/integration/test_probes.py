"""The tunnel probe against the real simulator: an answer needs mutual TLS and an HTTP exchange."""

from __future__ import annotations

import socket
from pathlib import Path

from sidecar.config import PlatformConfig
from sidecar.platform.curl_transport import CurlTransport
from sidecar.platform.transport import ClientIdentity
from sidecar.serving.probes import TunnelCheck
from tests.integration.test_server import sidecar_process, write_config
from yibao_devkit.simulator.server import RunningSimulator


def transport_to(url: str, simulator: RunningSimulator, *, foreign: bool = False) -> CurlTransport:
    pki = simulator.pki
    identity = (
        ClientIdentity(pki.other_client_cert, pki.other_client_key)
        if foreign
        else ClientIdentity(pki.client_cert, pki.client_key)
    )
    platform = PlatformConfig(  # [platform] of a sidecar pointed at url, as validated
        url=url,
        ca_file=pki.ca_cert,
        client_cert_file=identity.cert_file,
        client_key_file=identity.key_file,
        connect_timeout_seconds=2,
    )
    return CurlTransport(platform, pki.ca_cert, identity)


async def test_the_simulator_answers_the_probe_without_a_transaction(
    simulator: RunningSimulator,
) -> None:
    transport = transport_to(simulator.url, simulator)
    try:
        assert await transport.probe(timeout=5) == 405  # the endpoint takes POSTs only
        assert await TunnelCheck(transport, timeout=5)() is True
    finally:
        await transport.aclose()
    assert simulator.app.calls.total == 0  # no envelope reached the platform


async def test_a_client_certificate_the_gateway_refuses_fails_the_probe(
    simulator: RunningSimulator,
) -> None:
    transport = transport_to(simulator.url, simulator, foreign=True)
    try:
        assert await TunnelCheck(transport, timeout=5)() is False
    finally:
        await transport.aclose()


async def test_nothing_listening_fails_the_probe(simulator: RunningSimulator) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    transport = transport_to(f"https://127.0.0.1:{port}", simulator)
    try:
        assert await TunnelCheck(transport, timeout=2)() is False
    finally:
        await transport.aclose()


async def test_a_health_port_in_use_stops_start_up_with_one_line(
    simulator: RunningSimulator, short_dir: Path, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(
            tmp_path / "sidecar.toml", simulator, short_dir, f'health_listen = "127.0.0.1:{port}"'
        )
        process = sidecar_process(config)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 1
    # grpc's core logs its own line about the bind first; ours is the last, and names the address
    assert (
        stderr.splitlines()[-1] == f"yibao-sidecar: cannot start: cannot listen on 127.0.0.1:{port}"
    )
    assert not (short_dir / "sidecar.sock").exists()


async def test_a_platform_key_file_of_another_certificate_stops_start_up_with_one_line(
    simulator: RunningSimulator, short_dir: Path, tmp_path: Path
) -> None:
    """The tunnel's files are checked at start-up, not at the first handshake."""
    pki = simulator.pki
    config = write_config(tmp_path / "sidecar.toml", simulator, short_dir)
    config.write_text(config.read_text().replace(str(pki.client_key), str(pki.other_client_key)))
    process = sidecar_process(config)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 2
    assert stderr.strip() == (
        "config: platform.ca_file/client_cert_file/client_key_file: unusable "
        f"({pki.other_client_key} is not the key of {pki.client_cert})"
    )
    assert "PRIVATE KEY" not in stderr
    assert not (short_dir / "sidecar.sock").exists()

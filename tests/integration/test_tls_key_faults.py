"""The tunnel's record of the TLS key in the token (``KeyFaults``), against the real engine.

libcurl with the key in SoftHSM through OpenSSL's ``pkcs11`` engine (libp11), in front of the
devkit simulator behind a relay that can cut every connection (``Cutter``): a handshake that
fails because the token vanished is recorded as a key fault; a refused connection and a gateway
refusing the certificate with a TLS alert are not; a request on a new connection clears a fault,
one on a pooled connection does not. With the token's key, TLS session resumption is off, so a
cut connection is followed by a full handshake even to the same gateway.

The scenario runs in a process of its own: libp11 enumerates the tokens once per process (a
token made after the first use of the engine is never found) and keeps a vanished key's handle
for good, so this pytest process could use neither the token made here nor, afterwards, the
engine's view of it. The scenario's clock is a fake: the fault's times are exact.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from tests.hsm_fixtures import SoftHsmTokens
from tests.integration.test_tls_key_sidecar import TlsTokens, make_tls_tokens

VANISHED = "PKCS#11 module::Object handle invalid"


def scenario(argument: str) -> None:
    """The child process: run the steps, print one JSON list of them."""
    print(json.dumps(asyncio.run(_scenario(json.loads(argument)))))


async def _scenario(args: dict[str, Any]) -> list[dict[str, Any]]:
    from hsm.token import HsmToken, TokenConfig
    from sidecar.config import HsmConfig, PlatformConfig
    from sidecar.keys.tls_key import token_tls_key
    from sidecar.platform.curl_transport import CurlTransport
    from sidecar.platform.tls_key_faults import KeyFaults
    from sidecar.platform.transport import TransportError
    from tests.integration.test_curl_engine_key import refusing_server
    from tests.integration.test_tls_key_sidecar import Cutter, base_url, token_away
    from yibao_devkit.devcerts import DevPki
    from yibao_devkit.simulator.server import running_simulator

    pki_dir = Path(args["pki"])
    pki = DevPki.in_directory(pki_dir)
    hsm = HsmConfig(**args["hsm"])
    now = [100.0]
    faults = KeyFaults(lambda: now[0])
    steps: list[dict[str, Any]] = []

    async def step(name: str, tunnel: CurlTransport) -> None:
        try:
            answer: Any = await tunnel.probe(timeout=5)
        except TransportError as exc:
            answer = {"sent": exc.sent, "error": str(exc)}
        fault = faults.fault
        steps.append(
            {
                "step": name,
                "answer": answer,
                "fault": None if fault is None else [fault.reason, fault.error, fault.since],
                "unusable_for": faults.unusable_for(),
            }
        )

    async with running_simulator(pki=pki, seed=3, population_size=5) as simulator:
        cutter = Cutter(int(base_url(simulator).rsplit(":", 1)[1]))
        port = await cutter.start()
        platform = PlatformConfig(
            url=f"https://127.0.0.1:{port}",
            ca_file=pki.ca_cert,
            client_cert_file=pki.client_cert,
            client_key="token:tls",
            http2=False,
            connect_timeout_seconds=2,
        )
        config = TokenConfig(
            module=str(hsm.module),
            token_label=hsm.token_label,
            user_pin_file=str(hsm.user_pin_file),
            pool_size=1,
        )
        with HsmToken.open(config) as token:
            key = token_tls_key(platform, hsm, token)

        def tunnel(url: str) -> CurlTransport:
            config = platform.model_copy(update={"url": url})
            return CurlTransport(config, pki.ca_cert, key.identity, key_faults=faults)

        async def reconnect() -> None:
            cutter.cut()
            await asyncio.sleep(0.3)  # the pool sees its idle connection close

        gateway = tunnel(platform.url)
        try:
            await step("first", gateway)
            await step("refused", tunnel(f"https://127.0.0.1:{args['closed_port']}"))
            with refusing_server(pki_dir, pki.other_ca_cert, Path(args["log"])) as url:
                await step("alert", tunnel(url))
            faults.unusable("pkcs11", "set by the test")  # at 100
            now[0] = 110.0
            await step("pooled, marked", gateway)
            await reconnect()
            await step("new connection, marked", gateway)
            with token_away(Path(args["tls_dir"])):
                await step("pooled, token away", gateway)
                await reconnect()
                now[0] = 200.0
                await step("new connection, token away", gateway)
                await reconnect()
                now[0] = 210.0
                await step("again, token away", gateway)
            await reconnect()
            now[0] = 230.0
            await step("token back", gateway)
        finally:
            await gateway.aclose()
            cutter.close()
            key.close()
    return steps


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def tls_tokens(
    softhsm_tokens: SoftHsmTokens, tmp_path_factory: pytest.TempPathFactory
) -> TlsTokens:
    return make_tls_tokens(softhsm_tokens, tmp_path_factory.mktemp("tls-faults"), "tlsk-fault")


@pytest.mark.slow
def test_key_faults_are_the_tokens_alone_and_a_new_connection_clears_them(
    tls_tokens: TlsTokens, tmp_path: Path
) -> None:
    argument = {
        "pki": str(tls_tokens.pki.ca_cert.parent),
        "hsm": tls_tokens.hsm(),
        "tls_dir": str(tls_tokens.tls_dir),
        "closed_port": closed_port(),
        "log": str(tmp_path / "s_server.log"),
    }
    code = "import sys; from tests.integration.test_tls_key_faults import scenario; "
    code += "scenario(sys.argv[1])"
    child = subprocess.run(
        [sys.executable, "-c", code, json.dumps(argument)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=tls_tokens.main.env(),
    )
    assert child.returncode == 0, child.stderr
    steps = {item["step"]: item for item in json.loads(child.stdout.strip().splitlines()[-1])}

    assert steps["first"]["answer"] == 405 and steps["first"]["fault"] is None
    # Ordinary failures say nothing about the key.
    refused = steps["refused"]["answer"]
    assert refused["sent"] is False and "Couldn't connect" in refused["error"], refused
    alert = steps["alert"]["answer"]
    assert alert["sent"] is False and "alert unknown ca" in alert["error"], alert
    assert steps["refused"]["fault"] is None and steps["alert"]["fault"] is None
    # A request on a pooled connection proves nothing; one on a new connection clears.
    assert steps["pooled, marked"]["answer"] == 405
    assert steps["pooled, marked"]["fault"] == ["pkcs11", "set by the test", 100.0]
    assert steps["new connection, marked"]["answer"] == 405
    assert steps["new connection, marked"]["fault"] is None
    # The token vanishes: the pooled connection still works, the next full handshake does not
    # (no resumed session hides it), and the fault keeps the time of its first failure.
    assert steps["pooled, token away"]["answer"] == 405
    assert steps["pooled, token away"]["fault"] is None
    for name in ("new connection, token away", "again, token away", "token back"):
        answer = steps[name]["answer"]
        assert answer["sent"] is False and VANISHED in answer["error"], (name, answer)
        assert steps[name]["fault"] == ["pkcs11", "Object handle invalid", 200.0], name
    assert steps["token back"]["unusable_for"] == 30.0  # libp11 never recovers in-process
    pin = tls_tokens.pin
    assert pin not in child.stdout and pin not in child.stderr

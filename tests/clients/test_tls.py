"""Over mutual TLS on TCP: the kit's ``connect_tls`` and ``yibao-sidecar call --target``. The
sidecar's listener uses the development PKI of the simulator (one CA for both ends here)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sidecar import cli
from tests.audit_fixtures import AuditHsm
from tests.integration.conftest import RunningSidecar, running_sidecar, settings_for
from yibao_client import Unavailable, connect_tls, connect_tls_async
from yibao_client.v1 import common, consent
from yibao_devkit.simulator.server import RunningSimulator

WHO = {"tenant": "acme-corp", "operator": "im-bot-01"}


@pytest.fixture
async def tls_sidecar(
    simulator: RunningSimulator, short_dir: Path, audit_hsm: AuditHsm
) -> AsyncIterator[RunningSidecar]:
    pki = simulator.pki
    tls = {
        "cert_file": str(pki.server_cert),
        "key_file": str(pki.server_key),
        "client_ca_file": str(pki.ca_cert),
    }
    settings = settings_for(simulator, short_dir, audit_hsm, tcp_listen="127.0.0.1:0", tls=tls)
    async with running_sidecar(settings) as running:
        yield running


def subject() -> common.DataSubject:
    return common.DataSubject(
        certificate_type=common.CERTIFICATE_TYPE_RESIDENT_ID_CARD,
        certificate_number="310115197409042519",
        name="朱博杰",
    )


async def test_the_kit_calls_over_mutual_tls(
    tls_sidecar: RunningSidecar, simulator: RunningSimulator
) -> None:
    pki, port = simulator.pki, tls_sidecar.sidecar.server.tcp_port
    async with connect_tls_async(
        f"127.0.0.1:{port}",
        ca=pki.ca_cert,
        cert=pki.client_cert,
        key=pki.client_key,
        server_name="localhost",
        **WHO,
    ) as client:
        answer = await client.list_consents(consent.ListConsentsRequest(subject=subject()))
    assert list(answer.consents) == []


async def test_a_client_without_a_certificate_of_the_ca_gets_no_connection(
    tls_sidecar: RunningSidecar, simulator: RunningSimulator
) -> None:
    pki, port = simulator.pki, tls_sidecar.sidecar.server.tcp_port
    stranger = connect_tls(
        f"127.0.0.1:{port}",
        ca=pki.ca_cert,
        cert=pki.other_client_cert,
        key=pki.other_client_key,
        server_name="localhost",
        **WHO,
    )
    with stranger, pytest.raises(Unavailable) as caught:
        await asyncio.to_thread(
            stranger.list_consents, consent.ListConsentsRequest(subject=subject()), timeout=5
        )
    assert caught.value.reason is None


async def test_the_call_command_over_mutual_tls(
    capsys: pytest.CaptureFixture[str], tls_sidecar: RunningSidecar, simulator: RunningSimulator
) -> None:
    pki, port = simulator.pki, tls_sidecar.sidecar.server.tcp_port
    argv = [
        "call",
        "--target",
        f"127.0.0.1:{port}",
        "--ca",
        str(pki.ca_cert),
        "--cert",
        str(pki.client_cert),
        "--key",
        str(pki.client_key),
        "--server-name",
        "localhost",
        "--tenant",
        "acme-corp",
        "--operator",
        "im-bot-01",
        "ListConsents",
        "--json",
        json.dumps({"subject": {"certificate_type": "CERTIFICATE_TYPE_RESIDENT_ID_CARD"}}),
    ]
    code = await asyncio.to_thread(cli.main, argv)
    out, err = capsys.readouterr()
    assert code == 1, err  # reached the sidecar: its own validation answers
    assert json.loads(out)["code"] == "INVALID_ARGUMENT"
    assert "subject.certificate_number" in out

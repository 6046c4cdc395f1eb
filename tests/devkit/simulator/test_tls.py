"""Mutual TLS: only clients holding a certificate from the platform CA get an answer."""

from __future__ import annotations

import ssl
import warnings

import httpx
import pytest

from tests.devkit.simulator.support import client_context
from yibao_devkit.devcerts import DevPki
from yibao_devkit.simulator import RunningSimulator

TLS_VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]


async def post(context: ssl.SSLContext, simulator: RunningSimulator) -> httpx.Response:
    async with httpx.AsyncClient(http2=True, verify=context, timeout=10) as http:
        return await http.post(simulator.endpoint, content=b"{}")


@pytest.mark.parametrize("version", TLS_VERSIONS, ids=["tls1.2", "tls1.3"])
async def test_client_with_the_platform_certificate_is_answered(
    pki: DevPki, simulator: RunningSimulator, version: ssl.TLSVersion
) -> None:
    context = client_context(trust=pki.ca_cert, cert=pki.client_cert, key=pki.client_key)
    context.minimum_version = context.maximum_version = version
    response = await post(context, simulator)
    assert response.status_code == 200
    assert simulator.app.calls.total == 1


@pytest.mark.parametrize("version", TLS_VERSIONS, ids=["tls1.2", "tls1.3"])
async def test_client_without_a_certificate_is_refused(
    pki: DevPki, simulator: RunningSimulator, version: ssl.TLSVersion
) -> None:
    context = client_context(trust=pki.ca_cert)
    context.minimum_version = context.maximum_version = version
    with pytest.raises(httpx.TransportError):
        await post(context, simulator)
    assert simulator.app.calls.total == 0


@pytest.mark.parametrize("version", TLS_VERSIONS, ids=["tls1.2", "tls1.3"])
async def test_client_with_another_cas_certificate_is_refused(
    pki: DevPki, simulator: RunningSimulator, version: ssl.TLSVersion
) -> None:
    context = client_context(
        trust=pki.ca_cert, cert=pki.other_client_cert, key=pki.other_client_key
    )
    context.minimum_version = context.maximum_version = version
    with pytest.raises(httpx.TransportError):
        await post(context, simulator)
    assert simulator.app.calls.total == 0


async def test_client_trusting_another_ca_refuses_the_server(
    pki: DevPki, simulator: RunningSimulator
) -> None:
    context = client_context(trust=pki.other_ca_cert, cert=pki.client_cert, key=pki.client_key)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        await post(context, simulator)
    assert simulator.app.calls.total == 0


async def test_tls_below_1_2_is_refused(pki: DevPki, simulator: RunningSimulator) -> None:
    context = client_context(trust=pki.ca_cert, cert=pki.client_cert, key=pki.client_key)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # that is the point of the test
            context.minimum_version = ssl.TLSVersion.TLSv1_1
            context.maximum_version = ssl.TLSVersion.TLSv1_1
    except ValueError:
        pytest.skip("this OpenSSL build cannot even offer TLS 1.1")
    with pytest.raises(httpx.ConnectError):
        await post(context, simulator)


async def test_server_answers_by_name_and_address(pki: DevPki, simulator: RunningSimulator) -> None:
    context = client_context(trust=pki.ca_cert, cert=pki.client_cert, key=pki.client_key)
    async with httpx.AsyncClient(http2=True, verify=context, timeout=10) as http:
        for host in ("localhost", "127.0.0.1"):
            url = f"https://{host}:{simulator.port}/fsi/api/rsfComIfsService/callService"
            assert (await http.post(url, content=b"{}")).status_code == 200

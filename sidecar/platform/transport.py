"""The tunnel to the platform gateway: HTTPS with mutual TLS over a bounded HTTP/2 pool.

``Transport`` is the seam: the client only needs "send these bytes, give me the answer's bytes".
``HttpsTransport`` is the real one (httpx, HTTP/2, TLS 1.2 minimum, the server verified against
the configured CA bundle, our certificate presented). Tests can put any other transport behind
the client.

The TLS client key is named by ``ClientIdentity``: a key file (development), or an ``EngineKey``
that stays in the HSM and is used through OpenSSL's ``pkcs11`` engine. Only the libcurl transport
(``sidecar.platform.curl_transport``) can use an engine key; Python's ``ssl`` cannot.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx

from hsm.pin import Pin
from sidecar.config import PlatformConfig
from sidecar.platform.gateway_login import (
    FormPostError,
    GatewayLogin,
    GatewayLoginError,
    NoLogin,
)
from sidecar.platform.pinning import pinned_transport


class TransportError(Exception):
    """The answer did not arrive; ``sent`` says whether the request may have been delivered."""

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


class TransportTimeout(TransportError):
    """No answer within the time allowed."""


class Transport(Protocol):
    async def post(self, body: bytes, *, timeout: float) -> bytes: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class EngineKey:
    """A TLS client key that never leaves the token: OpenSSL reaches it through an engine.

    ``engine`` is the OpenSSL engine's id (``"pkcs11"``), ``key_id`` what that engine loads
    (a ``pkcs11:`` URI naming token and object, WITHOUT the PIN: it may end up in a log), ``pin``
    the user PIN (given to libcurl as CURLOPT_KEYPASSWD, never in a URI, argv or environment),
    ``openssl_conf`` an OpenSSL configuration that loads the engine and names the PKCS#11 module
    (None: the process's OpenSSL configuration already does).
    """

    engine: str
    key_id: str
    pin: Pin
    openssl_conf: Path | None = None

    def __post_init__(self) -> None:
        if "pin-value" in self.key_id.lower():
            raise ValueError("the engine key's URI must not carry the PIN (use pin)")


@dataclass(frozen=True)
class ClientIdentity:
    """The certificate and key the sidecar presents to the platform gateway.

    Kept apart from ``[platform]`` on purpose: it names the certificate and EITHER a key file
    (``key_file``, development) OR a key held in the HSM (``engine_key``), not the section.
    """

    cert_file: Path
    key_file: Path | None = None
    engine_key: EngineKey | None = None

    def __post_init__(self) -> None:
        if (self.key_file is None) == (self.engine_key is None):
            raise ValueError("a client identity needs exactly one of key_file and engine_key")

    def install(self, context: ssl.SSLContext) -> None:
        """Load certificate and key file into a Python ``ssl`` context (httpx transport)."""
        if self.key_file is None:
            raise ValueError("a key held in the HSM works only with the curl transport")
        context.load_cert_chain(certfile=self.cert_file, keyfile=self.key_file)


def client_tls_context(ca_file: Path, identity: ClientIdentity) -> ssl.SSLContext:
    """A TLS context that verifies the gateway against ``ca_file`` and presents ``identity``."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    identity.install(context)
    return context


class HttpsTransport:
    """POSTs envelopes to one gateway URL over a pooled, mutually authenticated connection.

    ``config`` is ``[platform]`` as pydantic validated it: the gateway's URL and path, HTTP/2, the
    pool's size, the connect timeout, the pinned server keys. ``tls`` is the client context the
    composition root built from its certificate files (``client_tls_context``); ``login`` the
    access gateway's, from ``[platform.gateway_login]`` and its secret files.
    """

    def __init__(
        self,
        config: PlatformConfig,
        tls: ssl.SSLContext,
        *,
        login: GatewayLogin | None = None,
    ) -> None:
        self._url = config.url.rstrip("/") + config.path
        self._login = login or NoLogin()
        self._connect_timeout = config.connect_timeout_seconds
        http2, pins = config.http2, config.pinned_server_keys
        limits = httpx.Limits(
            max_connections=config.max_connections,
            max_keepalive_connections=config.max_connections,
            keepalive_expiry=60,
        )
        self._client = httpx.AsyncClient(
            verify=tls,
            http2=http2,
            limits=limits,
            transport=pinned_transport(tls, pins, http2=http2, limits=limits) if pins else None,
            headers={"content-type": "application/json; charset=utf-8"},
            follow_redirects=False,
            trust_env=False,
        )

    async def post(self, body: bytes, *, timeout: float) -> bytes:
        response = await self._send(body, timeout)
        if response.status_code == 401:  # refused at the gateway: log in again and resend once
            self._login.invalidate()
            response = await self._send(body, timeout)
        if response.status_code != 200:
            raise TransportError(f"the platform answered HTTP {response.status_code}", sent=True)
        return response.content

    async def _send(self, body: bytes, timeout: float) -> httpx.Response:
        limits = httpx.Timeout(timeout, connect=min(self._connect_timeout, timeout))
        try:
            headers = await self._login.headers(self._post_form, timeout)
        except GatewayLoginError as exc:
            raise TransportError(f"gateway login failed: {exc}", sent=False) from None
        try:
            return await self._client.post(self._url, content=body, headers=headers, timeout=limits)
        except (httpx.ConnectTimeout, httpx.PoolTimeout):
            raise TransportTimeout("timed out connecting to the platform", sent=False) from None
        except httpx.TimeoutException:
            raise TransportTimeout("timed out waiting for the platform", sent=True) from None
        except httpx.ConnectError as exc:
            raise TransportError(
                f"cannot connect to the platform: {_reason(exc)}", sent=False
            ) from None
        except httpx.TransportError as exc:
            raise TransportError(
                f"connection to the platform failed: {_reason(exc)}", sent=True
            ) from None

    async def _post_form(
        self, url: str, body: bytes, headers: dict[str, str], timeout: float
    ) -> tuple[int, bytes]:
        try:
            response = await self._client.post(url, content=body, headers=headers, timeout=timeout)
        except httpx.HTTPError as exc:
            raise FormPostError(type(exc).__name__) from None
        return response.status_code, response.content

    async def probe(self, *, timeout: float) -> int:
        """Whether the tunnel answers: a body-less GET of the endpoint; the HTTP status.

        It travels the same pool, TLS context and pins as the transactions, so an answer proves
        name resolution, the mutual TLS handshake and an HTTP exchange with the gateway. It sends
        no envelope and signs nobody in; the endpoint answers a GET with 405 (or 401 in front of
        an access gateway). ``TransportError`` when no HTTP answer arrived.
        """
        limits = httpx.Timeout(timeout, connect=min(self._connect_timeout, timeout))
        try:
            response = await self._client.get(self._url, timeout=limits)
        except httpx.TimeoutException:
            raise TransportTimeout("timed out probing the platform", sent=False) from None
        except httpx.TransportError as exc:
            raise TransportError(f"cannot reach the platform: {_reason(exc)}", sent=False) from None
        return response.status_code

    async def aclose(self) -> None:
        await self._client.aclose()


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]

"""Optional pinning of the platform gateway's TLS key, checked before any request is sent.

The CA bundle and the gateway's name are always verified by TLS itself. A pin adds: the server's
SubjectPublicKeyInfo must hash (SHA-256, hex) to one of the configured values, so a certificate
wrongly issued by a trusted CA is still refused. The check runs right after the TLS handshake,
inside the connection pool's network layer (httpcore's ``AsyncNetworkBackend``), so a connection
to an unpinned server is closed before a single request byte travels on it. Configure two pins
(current and next key) to rotate without downtime.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def spki_sha256(certificate_der: bytes) -> str:
    """The pin of a certificate: SHA-256 (hex) of its DER SubjectPublicKeyInfo."""
    key = x509.load_der_x509_certificate(certificate_der).public_key()
    return hashlib.sha256(
        key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    ).hexdigest()


class _PinnedStream(httpcore.AsyncNetworkStream):
    def __init__(self, inner: httpcore.AsyncNetworkStream, pins: frozenset[str]) -> None:
        self._inner = inner
        self._pins = pins

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        secured = await self._inner.start_tls(ssl_context, server_hostname, timeout)
        tls: ssl.SSLObject | None = secured.get_extra_info("ssl_object")
        der = tls.getpeercert(binary_form=True) if tls is not None else None
        if der is None or spki_sha256(der) not in self._pins:
            await secured.aclose()
            raise httpcore.ConnectError("the gateway's TLS key is not one of the pinned keys")
        return secured


class _PinningBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, pins: frozenset[str]) -> None:
        self._inner = httpcore.AnyIOBackend()
        self._pins = pins

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _PinnedStream(stream, self._pins)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def pinned_transport(
    tls: ssl.SSLContext, pins: Iterable[str], *, http2: bool, limits: httpx.Limits
) -> httpx.AsyncHTTPTransport:
    """An httpx transport whose connections are refused unless the server key is pinned."""
    transport = httpx.AsyncHTTPTransport(verify=tls, http2=http2, limits=limits)
    # httpx builds its httpcore pool without a way to pass a network backend; rebuild it with
    # the same settings plus ours (httpx is pinned below 0.29 in pyproject.toml; tested).
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=tls,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        http1=True,
        http2=http2,
        network_backend=_PinningBackend(frozenset(pin.lower() for pin in pins)),
    )
    return transport

"""Opening a client: over the sidecar's Unix socket (same pod) or mutual TLS over TCP.

    with connect_unix("/run/yibao/sidecar.sock", tenant="acme-corp", operator="E10023") as client:
        answer = client.get_enrollment(gateway.GetEnrollmentRequest(subject=subject))

Over TCP the sidecar accepts only clients with a certificate of its CA (docs/security.md); the
certificate's SAN is the workload identity its access policy knows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from yibao_client.client import AsyncClient, CallerIdentity, Client
from yibao_client.retry import RetryPolicy

DEFAULT_SOCKET = "/run/yibao/sidecar.sock"

ChannelOptions = Sequence[tuple[str, Any]]


def _caller(tenant: str, operator: str, traceparent: str, tracestate: str) -> CallerIdentity:
    return CallerIdentity(tenant, operator, traceparent, tracestate)


def _credentials(ca: str | Path, cert: str | Path, key: str | Path) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=Path(ca).read_bytes(),
        private_key=Path(key).read_bytes(),
        certificate_chain=Path(cert).read_bytes(),
    )


def _tls_options(server_name: str | None, options: ChannelOptions) -> list[tuple[str, Any]]:
    extra = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    return [*options, *extra]


def connect_unix(
    path: str | Path = DEFAULT_SOCKET,
    *,
    tenant: str,
    operator: str,
    traceparent: str = "",
    tracestate: str = "",
    retry: RetryPolicy | None = None,
    options: ChannelOptions = (),
) -> Client:
    """A synchronous client over the sidecar's Unix socket."""
    channel = grpc.insecure_channel(f"unix:{path}", options=list(options))
    return Client(channel, _caller(tenant, operator, traceparent, tracestate), retry)


def connect_tls(
    target: str,
    *,
    ca: str | Path,
    cert: str | Path,
    key: str | Path,
    tenant: str,
    operator: str,
    server_name: str | None = None,
    traceparent: str = "",
    tracestate: str = "",
    retry: RetryPolicy | None = None,
    options: ChannelOptions = (),
) -> Client:
    """A synchronous client over mutual TLS (``target`` is ``host:port``; PEM file paths)."""
    channel = grpc.secure_channel(
        target, _credentials(ca, cert, key), options=_tls_options(server_name, options)
    )
    return Client(channel, _caller(tenant, operator, traceparent, tracestate), retry)


def connect_unix_async(
    path: str | Path = DEFAULT_SOCKET,
    *,
    tenant: str,
    operator: str,
    traceparent: str = "",
    tracestate: str = "",
    retry: RetryPolicy | None = None,
    options: ChannelOptions = (),
) -> AsyncClient:
    """An asyncio client over the sidecar's Unix socket (call it inside the running loop)."""
    channel = grpc.aio.insecure_channel(f"unix:{path}", options=list(options))
    return AsyncClient(channel, _caller(tenant, operator, traceparent, tracestate), retry)


def connect_tls_async(
    target: str,
    *,
    ca: str | Path,
    cert: str | Path,
    key: str | Path,
    tenant: str,
    operator: str,
    server_name: str | None = None,
    traceparent: str = "",
    tracestate: str = "",
    retry: RetryPolicy | None = None,
    options: ChannelOptions = (),
) -> AsyncClient:
    """An asyncio client over mutual TLS."""
    channel = grpc.aio.secure_channel(
        target, _credentials(ca, cert, key), options=_tls_options(server_name, options)
    )
    return AsyncClient(channel, _caller(tenant, operator, traceparent, tracestate), retry)

"""Who the calling workload is, as the transport proves it, never as the caller claims it.

Two proofs count. Over the Unix socket, the kernel's record of the connecting process
(``SO_PEERCRED``: uid, gid, pid at ``connect()``), which the peer-credential front
(``sidecar/access/front.py``) reads for each connection. Over TCP, the client certificate that
gRPC's mutual TLS verified against the configured client CA: its URI SANs (SPIFFE IDs) and DNS
SANs. Anything else (plaintext TCP, a connection the front did not make) has no identity.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

_UCRED = struct.Struct("3i")  # struct ucred { pid_t pid; uid_t uid; gid_t gid; }


@dataclass(frozen=True)
class UnixPeer:
    """The kernel's credentials of the process that connected to the Unix socket."""

    uid: int
    gid: int
    pid: int

    @property
    def kind(self) -> str:
        return "unix"

    def describe(self) -> str:
        return f"unix peer uid {self.uid} gid {self.gid}"


@dataclass(frozen=True)
class CertificatePeer:
    """The identities of a client certificate that mutual TLS verified."""

    uris: frozenset[str]
    dns_names: frozenset[str]

    @property
    def kind(self) -> str:
        return "tls"

    def describe(self) -> str:
        names = sorted(self.uris) or sorted(self.dns_names) or ["(no SAN)"]
        return f"TLS client {names[0]}"


Peer = UnixPeer | CertificatePeer

# What the front knows: the kernel identity behind a gRPC ``context.peer()`` string, if any.
UnixPeerLookup = Callable[[str], UnixPeer | None]


def peer_credentials(connection: socket.socket) -> UnixPeer:
    """``SO_PEERCRED`` of a connected Unix socket (Linux)."""
    raw = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return UnixPeer(uid=uid, gid=gid, pid=pid)


def identify(context: grpc.aio.ServicerContext[Any, Any], unix: UnixPeerLookup) -> Peer | None:
    """The workload identity the transport proved for this call, or None."""
    auth = context.auth_context()
    if auth.get("transport_security_type") == [b"ssl"]:
        # gRPC sets these only for a certificate that chained to the configured client CA.
        uris = frozenset(v.decode() for v in auth.get("peer_uri", ()))
        dns = frozenset(v.decode() for v in auth.get("peer_dns", ()))
        return CertificatePeer(uris=uris, dns_names=dns)
    return unix(context.peer())

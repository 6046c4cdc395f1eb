"""The seam of the tunnel to the platform gateway, and the identity the sidecar presents on it.

``Transport`` is the seam: the client only needs "send these bytes, give me the answer's bytes".
The real one is ``sidecar.platform.curl_transport.CurlTransport`` (libcurl: HTTP/2 or HTTP/1.1,
mutual TLS 1.2+, the gateway verified against the configured CA bundle, optional SPKI pins);
tests can put any other transport behind the client.

The TLS client key is named by ``ClientIdentity``: a key file (development), or an ``EngineKey``
that stays in the HSM and is used through OpenSSL's ``pkcs11`` engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)

from hsm.pin import Pin


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


class TlsFilesError(Exception):
    """The tunnel's TLS files cannot work (the message names the file, never key material)."""


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


def check_tls_files(ca_file: Path, identity: ClientIdentity) -> None:
    """That the CA bundle holds PEM certificates and, with a key file, that it is an unencrypted
    PEM key of the PEM client certificate: a wrong file stops start-up (``TlsFilesError``)
    instead of failing every handshake. A key in the HSM is checked against its certificate by
    ``sidecar.keys.tls_key``."""
    try:
        x509.load_pem_x509_certificates(ca_file.read_bytes())
    except (OSError, ValueError):
        raise TlsFilesError(f"{ca_file} is not a bundle of PEM certificates") from None
    if identity.key_file is None:
        return
    try:
        cert = x509.load_pem_x509_certificate(identity.cert_file.read_bytes())
    except (OSError, ValueError):
        raise TlsFilesError(f"{identity.cert_file} is not a PEM certificate") from None
    try:
        key = load_pem_private_key(identity.key_file.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        raise TlsFilesError(f"{identity.key_file} is not an unencrypted PEM private key") from None
    spki = (Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        raise TlsFilesError(f"{identity.key_file} is not the key of {identity.cert_file}")

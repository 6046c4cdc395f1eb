"""Optional pinning of the platform gateway's TLS key: what a pin is.

The CA bundle and the gateway's name are always verified by TLS itself. A pin adds: the server's
SubjectPublicKeyInfo must hash (SHA-256, hex) to one of the configured values, so a certificate
wrongly issued by a trusted CA is still refused. libcurl checks it inside the handshake
(CURLOPT_PINNEDPUBLICKEY, ``curl_transport.curl_pins``), so a connection to an unpinned server
is closed before a single request byte travels on it. Configure two pins (current and next key)
to rotate without downtime.
"""

from __future__ import annotations

import hashlib

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def spki_sha256(certificate_der: bytes) -> str:
    """The pin of a certificate: SHA-256 (hex) of its DER SubjectPublicKeyInfo."""
    key = x509.load_der_x509_certificate(certificate_der).public_key()
    return hashlib.sha256(
        key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    ).hexdigest()

"""SM3 (GB/T 32905) and HMAC-SM3 on the host, through :mod:`hsm.sm.backend`."""

from __future__ import annotations

from hsm.sm import backend

DIGEST_BYTES = 32


def sm3(data: bytes) -> bytes:
    """The 32-byte SM3 digest of ``data``."""
    return backend.sm3_digest(data)


def hmac_sm3(key: bytes, data: bytes) -> bytes:
    """HMAC-SM3 (RFC 2104 with SM3) of ``data`` under ``key``: 32 bytes."""
    return backend.hmac_sm3(key, data)

"""SM4-GCM (RFC 8998) with a random 96-bit nonce: the one AEAD for data at rest.

A sealed value is ``nonce (12) || ciphertext || tag (16)``; the associated data binds it to
where it belongs (an audit record's id, a row and column), so it does not open anywhere else.
Used by the audit payloads (``sidecar.audit.payloads``) and the sealed columns
(``sidecar.fieldcrypt``). A module of its own beside :mod:`hsm.sm.sm4` because its callers
need only this, under the names they have always used (``encrypt``, ``decrypt``).
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import modes

from hsm.sm import backend
from hsm.sm.errors import DecryptionFailed
from hsm.sm.sm4 import check_key

NONCE_BYTES = 12
TAG_BYTES = 16


class PayloadError(DecryptionFailed):
    """A sealed value did not open: too short, wrong key or associated data, or changed."""

    def __init__(self, reason: str) -> None:
        super().__init__("sm4-gcm payload", reason)


def encrypt(key: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """``nonce || ciphertext || tag`` of ``plaintext`` under a fresh random nonce."""
    return encrypt_with_nonce(key, os.urandom(NONCE_BYTES), plaintext, associated)


def encrypt_with_nonce(key: bytes, nonce: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """:func:`encrypt` with a given nonce: for known-answer tests only. A nonce used twice
    under one key gives away the authentication key, so product code calls :func:`encrypt`."""
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"an SM4-GCM nonce here is {NONCE_BYTES} bytes")
    encryptor = backend.sm4_cipher(check_key(key), modes.GCM(nonce)).encryptor()
    encryptor.authenticate_additional_data(associated)
    body = encryptor.update(plaintext) + encryptor.finalize()
    return nonce + body + encryptor.tag


def decrypt(key: bytes, sealed: bytes, associated: bytes) -> bytes:
    """The plaintext of ``sealed``, or PayloadError; nothing is returned unauthenticated."""
    if len(sealed) < NONCE_BYTES + TAG_BYTES:
        raise PayloadError("payload is too short")
    nonce, body, tag = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:-TAG_BYTES], sealed[-TAG_BYTES:]
    decryptor = backend.sm4_cipher(check_key(key), modes.GCM(nonce, tag)).decryptor()
    decryptor.authenticate_additional_data(associated)
    try:
        return decryptor.update(body) + decryptor.finalize()
    except InvalidTag:
        raise PayloadError("payload failed its SM4-GCM tag check") from None

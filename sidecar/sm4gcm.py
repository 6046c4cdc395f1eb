"""SM4-GCM with a random 96-bit nonce: the one AEAD the sidecar uses for data at rest.

A sealed value is ``nonce (12) || ciphertext || tag (16)``; the associated data binds it to
where it belongs (an audit record's id, a row and column), so it does not open anywhere else.
Shared by the audit payloads (``sidecar.audit.payloads``) and the sealed columns
(``sidecar.fieldcrypt``).
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

NONCE_BYTES = 12
TAG_BYTES = 16


class PayloadError(Exception):
    """A payload did not decrypt (wrong key, or changed)."""


def encrypt(key: bytes, plaintext: bytes, associated: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    encryptor = Cipher(algorithms.SM4(key), modes.GCM(nonce)).encryptor()
    encryptor.authenticate_additional_data(associated)
    body = encryptor.update(plaintext) + encryptor.finalize()
    return nonce + body + encryptor.tag


def decrypt(key: bytes, sealed: bytes, associated: bytes) -> bytes:
    if len(sealed) < NONCE_BYTES + TAG_BYTES:
        raise PayloadError("payload is too short")
    nonce, body, tag = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:-TAG_BYTES], sealed[-TAG_BYTES:]
    decryptor = Cipher(algorithms.SM4(key), modes.GCM(nonce, tag)).decryptor()
    decryptor.authenticate_additional_data(associated)
    try:
        return decryptor.update(body) + decryptor.finalize()
    except InvalidTag:
        raise PayloadError("payload failed its SM4-GCM tag check") from None

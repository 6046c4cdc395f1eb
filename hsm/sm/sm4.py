"""SM4 (GB/T 32907) on the host: ECB and CBC, with or without PKCS#7 padding.

The protocol layer's data keys are known to the host anyway (scheme B derives its key from the
appId and appSecret), so SM4 runs here rather than in the HSM: OpenSSL's SM4 costs
microseconds, an HSM round trip does not. The AEAD for data at rest (SM4-GCM) is
:mod:`hsm.sm.gcm`, on the same key checks.

Decryption failures (a length that is not whole blocks, bad padding) raise
:class:`~hsm.sm.errors.DecryptionFailed` naming the field, and never say which padding byte was
wrong. ECB and CBC do not authenticate: callers verify a signature over the plaintext afterwards.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from hsm.sm import backend
from hsm.sm.errors import DecryptionFailed, KeyMaterialInvalid

KEY_SIZE = 16
BLOCK_SIZE = 16


def check_key(key: bytes) -> bytes:
    """``key`` as bytes if it is an SM4 key (16 bytes), else KeyMaterialInvalid."""
    if not isinstance(key, bytes | bytearray) or len(key) != KEY_SIZE:
        raise KeyMaterialInvalid("sm4 key", f"an SM4 key is {KEY_SIZE} bytes")
    return bytes(key)


def encrypt_ecb(key: bytes, plaintext: bytes, *, pad: bool = True) -> bytes:
    """SM4-ECB of ``plaintext``; PKCS#7-padded unless ``pad`` is False."""
    return _encrypt(_cipher(key, None), plaintext, pad)


def decrypt_ecb(
    key: bytes, ciphertext: bytes, *, pad: bool = True, field: str = "ciphertext"
) -> bytes:
    """Inverse of :func:`encrypt_ecb`; DecryptionFailed names ``field`` on any failure."""
    return _decrypt(_cipher(key, None), ciphertext, pad, field)


def encrypt_cbc(key: bytes, iv: bytes, plaintext: bytes, *, pad: bool = True) -> bytes:
    """SM4-CBC of ``plaintext`` with a 16-byte ``iv``; PKCS#7-padded unless ``pad`` is False."""
    return _encrypt(_cipher(key, iv), plaintext, pad)


def decrypt_cbc(
    key: bytes, iv: bytes, ciphertext: bytes, *, pad: bool = True, field: str = "ciphertext"
) -> bytes:
    """Inverse of :func:`encrypt_cbc`; DecryptionFailed names ``field`` on any failure."""
    return _decrypt(_cipher(key, iv), ciphertext, pad, field)


def _cipher(key: bytes, iv: bytes | None) -> Cipher[Any]:
    key = check_key(key)
    if iv is None:
        return backend.sm4_cipher(key, modes.ECB())  # noqa: S305 - the platform's choice
    if not isinstance(iv, bytes | bytearray) or len(iv) != BLOCK_SIZE:
        raise KeyMaterialInvalid("sm4 iv", f"an SM4-CBC IV is {BLOCK_SIZE} bytes")
    return backend.sm4_cipher(key, modes.CBC(bytes(iv)))


def _encrypt(cipher: Cipher[Any], plaintext: bytes, pad: bool) -> bytes:
    if pad:
        padder = padding.PKCS7(BLOCK_SIZE * 8).padder()
        plaintext = padder.update(plaintext) + padder.finalize()
    elif len(plaintext) % BLOCK_SIZE:
        raise ValueError(f"without padding the plaintext must be whole {BLOCK_SIZE}-byte blocks")
    encryptor = cipher.encryptor()
    return encryptor.update(plaintext) + encryptor.finalize()


def _decrypt(cipher: Cipher[Any], ciphertext: bytes, pad: bool, field: str) -> bytes:
    if not ciphertext or len(ciphertext) % BLOCK_SIZE:
        raise DecryptionFailed(field, f"ciphertext is not whole {BLOCK_SIZE}-byte blocks")
    decryptor = cipher.decryptor()
    plaintext = decryptor.update(ciphertext) + decryptor.finalize()
    if not pad:
        return plaintext
    unpadder = padding.PKCS7(BLOCK_SIZE * 8).unpadder()
    try:
        return unpadder.update(plaintext) + unpadder.finalize()
    except ValueError:
        raise DecryptionFailed(field, "bad PKCS#7 padding (wrong key or altered data)") from None

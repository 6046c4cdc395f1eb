"""SM4 on the host (GB/T 32907) through pyca ``cryptography`` (OpenSSL's SM4).

The data keys of both schemes are known to the host anyway (scheme B derives its key from the
appId and appSecret), so SM4 runs here rather than in the HSM: OpenSSL's SM4 costs microseconds,
an HSM round trip does not.

ECB and CBC, each with PKCS#7 padding (the platform's choice) or without (block-aligned data
only). Decryption failures (a length that is not whole blocks, bad padding) raise
``DecryptionFailed`` naming the field, and never say which padding byte was wrong. Nothing here
authenticates: callers verify a signature over the plaintext afterwards.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from sidecar.platform.security.errors import DecryptionFailed, KeyMaterialInvalid

KEY_SIZE = 16
BLOCK_SIZE = 16


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


def _cipher(key: bytes, iv: bytes | None) -> Cipher[modes.ECB] | Cipher[modes.CBC]:
    if not isinstance(key, bytes | bytearray) or len(key) != KEY_SIZE:
        raise KeyMaterialInvalid("sm4 key", f"an SM4 key is {KEY_SIZE} bytes")
    if iv is None:
        return Cipher(algorithms.SM4(bytes(key)), modes.ECB())  # noqa: S305 - the platform's choice
    if not isinstance(iv, bytes | bytearray) or len(iv) != BLOCK_SIZE:
        raise KeyMaterialInvalid("sm4 iv", f"an SM4-CBC IV is {BLOCK_SIZE} bytes")
    return Cipher(algorithms.SM4(bytes(key)), modes.CBC(bytes(iv)))


def _encrypt(cipher: Cipher[modes.ECB] | Cipher[modes.CBC], plaintext: bytes, pad: bool) -> bytes:
    if pad:
        padder = padding.PKCS7(BLOCK_SIZE * 8).padder()
        plaintext = padder.update(plaintext) + padder.finalize()
    elif len(plaintext) % BLOCK_SIZE:
        raise ValueError(f"without padding the plaintext must be whole {BLOCK_SIZE}-byte blocks")
    encryptor = cipher.encryptor()
    return encryptor.update(plaintext) + encryptor.finalize()


def _decrypt(
    cipher: Cipher[modes.ECB] | Cipher[modes.CBC], ciphertext: bytes, pad: bool, field: str
) -> bytes:
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

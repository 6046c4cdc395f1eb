"""The SM core's SM4: the shared vectors (ECB, CBC, GCM) in the core and in independent
implementations, padding, modes, and clean errors."""

from __future__ import annotations

import os

import pytest

from hsm.sm import gcm, sm4
from hsm.sm.errors import DecryptionFailed, KeyMaterialInvalid
from tests.vectors import SM4_CBC, SM4_ECB, SM4_GCM, GcmVector, Sm4Vector
from tests.vectors.independent import (
    gmssl_sm4_cbc,
    gmssl_sm4_ecb,
    openssl_sm4_cbc,
    openssl_sm4_ecb,
    tongsuopy_sm4_gcm,
)

KEY = SM4_ECB[0].key


@pytest.mark.parametrize("v", SM4_ECB)
def test_ecb_vectors(v: Sm4Vector) -> None:
    assert sm4.encrypt_ecb(v.key, v.plaintext, pad=v.padded) == v.ciphertext
    assert sm4.decrypt_ecb(v.key, v.ciphertext, pad=v.padded) == v.plaintext
    # independent: OpenSSL pads, so the vector's block is the first of its answer
    assert openssl_sm4_ecb(v.key, v.plaintext)[: len(v.ciphertext)] == v.ciphertext
    assert gmssl_sm4_ecb(v.key, v.plaintext)[: len(v.ciphertext)] == v.ciphertext


@pytest.mark.parametrize("v", SM4_CBC)
def test_cbc_vectors(v: Sm4Vector) -> None:
    assert v.iv is not None
    assert sm4.encrypt_cbc(v.key, v.iv, v.plaintext, pad=v.padded) == v.ciphertext
    assert sm4.decrypt_cbc(v.key, v.iv, v.ciphertext, pad=v.padded) == v.plaintext
    assert openssl_sm4_cbc(v.key, v.iv, v.plaintext, pad=v.padded) == v.ciphertext
    if v.padded:
        assert gmssl_sm4_cbc(v.key, v.iv, v.plaintext) == v.ciphertext


@pytest.mark.parametrize("v", SM4_GCM)
def test_gcm_vectors(v: GcmVector) -> None:
    sealed = v.iv + v.ciphertext + v.tag
    assert gcm.encrypt_with_nonce(v.key, v.iv, v.plaintext, v.aad) == sealed
    assert gcm.decrypt(v.key, sealed, v.aad) == v.plaintext
    assert tongsuopy_sm4_gcm(v.key, v.iv, v.aad, v.plaintext) == (v.ciphertext, v.tag)


def test_gcm_refuses_every_change() -> None:
    v = SM4_GCM[0]
    sealed = v.iv + v.ciphertext + v.tag
    for index in (0, len(v.iv), len(sealed) - 1):  # nonce, body, tag
        changed = bytearray(sealed)
        changed[index] ^= 1
        with pytest.raises(gcm.PayloadError, match="tag check"):
            gcm.decrypt(v.key, bytes(changed), v.aad)
    with pytest.raises(gcm.PayloadError, match="tag check"):
        gcm.decrypt(v.key, sealed, v.aad + b"x")  # sealed for another place
    with pytest.raises(gcm.PayloadError, match="too short"):
        gcm.decrypt(v.key, sealed[: gcm.NONCE_BYTES + gcm.TAG_BYTES - 1], v.aad)
    with pytest.raises(KeyMaterialInvalid, match="16 bytes"):
        gcm.decrypt(v.key[:8], sealed, v.aad)


def test_gcm_nonces_are_fresh() -> None:
    first, second = gcm.encrypt(KEY, b"same", b"ad"), gcm.encrypt(KEY, b"same", b"ad")
    assert first[: gcm.NONCE_BYTES] != second[: gcm.NONCE_BYTES]
    assert gcm.decrypt(KEY, first, b"ad") == gcm.decrypt(KEY, second, b"ad") == b"same"


def test_pkcs7_adds_a_whole_block_to_aligned_input() -> None:
    v = SM4_ECB[0]
    ciphertext = sm4.encrypt_ecb(KEY, v.plaintext)
    assert len(ciphertext) == 32
    assert ciphertext[:16] == v.ciphertext
    assert sm4.decrypt_ecb(KEY, ciphertext) == v.plaintext


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 100])
def test_ecb_pkcs7_matches_gmssl(size: int) -> None:
    plaintext = os.urandom(size)
    assert sm4.encrypt_ecb(KEY, plaintext) == gmssl_sm4_ecb(KEY, plaintext)


@pytest.mark.parametrize("size", [0, 5, 16, 33])
def test_ecb_and_cbc_pkcs7_match_openssl(size: int) -> None:
    plaintext, iv = os.urandom(size), os.urandom(16)
    assert sm4.encrypt_ecb(KEY, plaintext) == openssl_sm4_ecb(KEY, plaintext)
    assert sm4.encrypt_cbc(KEY, iv, plaintext) == openssl_sm4_cbc(KEY, iv, plaintext, pad=True)


def test_cbc_round_trip_and_chaining() -> None:
    iv = bytes(range(16))
    plaintext = b"A" * 32
    ciphertext = sm4.encrypt_cbc(KEY, iv, plaintext)
    assert ciphertext[:16] != ciphertext[16:32]  # equal blocks differ under CBC
    assert sm4.decrypt_cbc(KEY, iv, ciphertext) == plaintext
    assert sm4.encrypt_cbc(KEY, iv, plaintext, pad=False) == ciphertext[:32]


@pytest.mark.parametrize("key", [b"", b"k" * 15, b"k" * 17, b"k" * 32])
def test_bad_key_size(key: bytes) -> None:
    with pytest.raises(KeyMaterialInvalid, match="16 bytes"):
        sm4.encrypt_ecb(key, b"x")
    with pytest.raises(KeyMaterialInvalid, match="16 bytes"):
        gcm.encrypt(key, b"x", b"")


def test_bad_iv_size() -> None:
    with pytest.raises(KeyMaterialInvalid, match="IV"):
        sm4.encrypt_cbc(KEY, b"\x00" * 8, b"x")


def test_unaligned_plaintext_without_padding() -> None:
    with pytest.raises(ValueError, match="whole 16-byte blocks"):
        sm4.encrypt_ecb(KEY, b"x" * 15, pad=False)


@pytest.mark.parametrize("size", [0, 15, 17])
def test_ciphertext_of_partial_blocks(size: int) -> None:
    with pytest.raises(DecryptionFailed, match="encData: ciphertext is not whole"):
        sm4.decrypt_ecb(KEY, b"\x00" * size, field="encData")


def test_bad_padding_and_wrong_key() -> None:
    ciphertext = sm4.encrypt_ecb(KEY, b"secret health data")
    with pytest.raises(DecryptionFailed, match="output: bad PKCS#7 padding") as caught:
        sm4.decrypt_ecb(b"0" * 16, ciphertext, field="output")
    assert "secret" not in str(caught.value)
    unpadded = sm4.encrypt_ecb(KEY, b"\x00" * 16, pad=False)  # last byte 00: never valid padding
    with pytest.raises(DecryptionFailed):
        sm4.decrypt_ecb(KEY, unpadded)

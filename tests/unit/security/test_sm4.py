"""Host SM4: the standard's vector, padding, modes, and clean errors."""

from __future__ import annotations

import os

import pytest

from sidecar.platform.security import sm4
from sidecar.platform.security.errors import DecryptionFailed, KeyMaterialInvalid

from . import vectors
from .independent import gmssl_sm4_ecb, needs_openssl, openssl_sm4_ecb

KEY = bytes.fromhex(vectors.SM4_KEY)


def test_standard_vector_one_block_without_padding() -> None:
    plaintext = bytes.fromhex(vectors.SM4_PLAINTEXT)
    ciphertext = sm4.encrypt_ecb(KEY, plaintext, pad=False)
    assert ciphertext.hex() == vectors.SM4_CIPHERTEXT
    assert sm4.decrypt_ecb(KEY, ciphertext, pad=False) == plaintext


def test_pkcs7_adds_a_whole_block_to_aligned_input() -> None:
    plaintext = bytes.fromhex(vectors.SM4_PLAINTEXT)
    ciphertext = sm4.encrypt_ecb(KEY, plaintext)
    assert len(ciphertext) == 32
    assert ciphertext[:16].hex() == vectors.SM4_CIPHERTEXT
    assert sm4.decrypt_ecb(KEY, ciphertext) == plaintext


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 100])
def test_ecb_pkcs7_matches_gmssl(size: int) -> None:
    plaintext = os.urandom(size)
    assert sm4.encrypt_ecb(KEY, plaintext) == gmssl_sm4_ecb(KEY, plaintext)


@needs_openssl
@pytest.mark.parametrize("size", [0, 5, 16, 33])
def test_ecb_pkcs7_matches_openssl(size: int) -> None:
    plaintext = os.urandom(size)
    assert sm4.encrypt_ecb(KEY, plaintext) == openssl_sm4_ecb(KEY, plaintext)


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

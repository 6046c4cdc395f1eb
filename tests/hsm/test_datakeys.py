"""Data-key envelopes under the token's KEK."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: F401 - API shape only

from hsm.datakeys import DataKeyBlob, DataKeys, TamperedBlob
from hsm.errors import MalformedInput, PolicyError
from hsm.keys import KeyStore


async def test_round_trip_and_blob_names_the_kek_version(token) -> None:
    dks = DataKeys(token)
    dk, blob = await dks.new()
    assert len(dk) == 16
    parsed = DataKeyBlob.parse(blob)
    assert parsed.kek_label == KeyStore(token).active("kek").label
    assert parsed.kek_label.encode() in blob
    assert await dks.unwrap(blob) == dk
    assert dks.unwrap_blocking(blob) == dk


async def test_data_key_works_for_host_sm4_gcm(token) -> None:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    dk, blob = await DataKeys(token).new()
    nonce = os.urandom(12)
    enc = Cipher(algorithms.SM4(dk), modes.GCM(nonce)).encryptor()
    ct = enc.update(b"audit record") + enc.finalize()
    dk2 = await DataKeys(token).unwrap(blob)
    dec = Cipher(algorithms.SM4(dk2), modes.GCM(nonce, enc.tag)).decryptor()
    assert dec.update(ct) + dec.finalize() == b"audit record"


async def test_any_tampering_is_refused(token) -> None:
    dks = DataKeys(token)
    _, blob = await dks.new()
    label_len = blob[4]
    for i in range(5 + label_len, len(blob)):  # every byte of IV, ciphertext and MAC
        bad = bytearray(blob)
        bad[i] ^= 0x01
        with pytest.raises(TamperedBlob, match="integrity"):
            await dks.unwrap(bytes(bad))
    with pytest.raises(MalformedInput):
        await dks.unwrap(blob[:-1])
    with pytest.raises(MalformedInput):
        await dks.unwrap(b"XXXX" + blob[4:])


async def test_old_blobs_survive_rotation_until_the_kek_is_retired(token) -> None:
    dks = DataKeys(token)
    dk, blob = await dks.new()
    store = KeyStore(token)
    old = store.active("kek").label
    new = store.rotate("kek").label
    dks.refresh()
    dk2, blob2 = await dks.new()
    assert DataKeyBlob.parse(blob2).kek_label == new
    assert await dks.unwrap(blob) == dk  # previous KEK still decrypts
    store.retire(old)
    dks.refresh()
    with pytest.raises(PolicyError, match=f"{old} is retired"):
        await dks.unwrap(blob)
    assert await dks.unwrap(blob2) == dk2

"""Sealed columns with data keys wrapped by the token's active KEK (the production wrapper)."""

from __future__ import annotations

import pytest

from hsm.datakeys import DataKeyBlob, DataKeys
from sidecar.keys.fieldcrypt import FieldSealer, SealError, context

ROW = context("offsite_requests.outcome", "acme", "SubmitOffsiteRegistration", "req-1")
OUTCOME = "A13800138000 北京市海淀区".encode()


async def test_hsm_wrapped_round_trip_in_a_new_process_and_tampering(token) -> None:
    sealed = await FieldSealer(DataKeys(token)).seal(OUTCOME, ROW)
    assert OUTCOME[1:12] not in sealed and "北京".encode() not in sealed
    n = int.from_bytes(sealed[4:6], "big")
    DataKeyBlob.parse(sealed[6 : 6 + n])  # the wrapped key travels in the value: YDK1 under the KEK
    assert await FieldSealer(DataKeys(token)).open(sealed, ROW) == OUTCOME
    with pytest.raises(SealError):
        await FieldSealer(DataKeys(token)).open(sealed, context("offsite_requests.outcome"))
    wrapped_key_byte = bytearray(sealed)
    wrapped_key_byte[6 + n - 1] ^= 0x01  # the wrapped key's MAC
    with pytest.raises(SealError):
        await FieldSealer(DataKeys(token)).open(bytes(wrapped_key_byte), ROW)

"""Signature encodings: raw r||s <-> strict DER, and Base64."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hsm.sm.signature import (
    SignatureEncoding,
    b64decode,
    b64encode,
    decode_signature,
    der_to_raw,
    encode_signature,
    raw_to_der,
)
from sidecar.platform.security.errors import MalformedSecuredMessage
from tests.vectors import named as vectors

R = bytes.fromhex(vectors.SM2["r"])
S = bytes.fromhex(vectors.SM2["s"])


def test_known_der_of_the_gmt_vector() -> None:
    # Both r and s have the top bit set, so each INTEGER gets a leading 00: 2 + 33 bytes each.
    der = raw_to_der(R + S)
    assert der == bytes.fromhex("3046022100" + vectors.SM2["r"] + "022100" + vectors.SM2["s"])
    assert der_to_raw(der) == R + S


def test_small_values_are_minimal_and_padded_back() -> None:
    raw = (1).to_bytes(32, "big") + (0x80).to_bytes(32, "big")
    der = raw_to_der(raw)
    assert der == bytes.fromhex("300702010102020080")
    assert der_to_raw(der) == raw


@pytest.mark.parametrize(
    ("der_hex", "reason"),
    [
        ("", "not a SEQUENCE"),
        ("3106020101020101", "not a SEQUENCE"),
        ("308106020101020101", "long-form length"),
        ("3007020101020101", "length does not match"),
        ("300602010102010100", "length does not match"),  # trailing byte after the SEQUENCE
        ("3009020101020101020101", "bytes after s"),  # a third INTEGER
        ("3006040101020101", "not an INTEGER"),
        ("30050200020101", "length does not match"),  # empty INTEGER
        ("300702020001020101", "not minimal"),
        ("3006020181020101", "negative"),
        ("3008020101028102 0101".replace(" ", ""), "long-form length"),
        ("30270222" + "01" + "00" * 33 + "020101", "wider than 256 bits"),
        ("30260221" + "01" + "00" * 32 + "020101", "wider than 256 bits"),
        ("3006020101020201", "length does not match"),
    ],
)
def test_malformed_der_is_rejected(der_hex: str, reason: str) -> None:
    with pytest.raises(MalformedSecuredMessage, match=reason):
        der_to_raw(bytes.fromhex(der_hex), field="cainfo")


def test_errors_name_the_field_and_not_the_bytes() -> None:
    with pytest.raises(MalformedSecuredMessage) as caught:
        der_to_raw(bytes.fromhex("300702020001020101"), field="signData")
    assert caught.value.field == "signData"
    assert "0001" not in str(caught.value)


def test_raw_must_be_64_bytes() -> None:
    for size in (0, 63, 65):
        with pytest.raises(MalformedSecuredMessage, match="64 bytes"):
            raw_to_der(b"\x01" * size)
        with pytest.raises(MalformedSecuredMessage, match="64 bytes"):
            decode_signature(b"\x01" * size, SignatureEncoding.RAW)


def test_encoding_is_explicit() -> None:
    raw = R + S
    assert encode_signature(raw, SignatureEncoding.RAW) == raw
    assert encode_signature(raw, SignatureEncoding.DER) == raw_to_der(raw)
    assert decode_signature(raw_to_der(raw), SignatureEncoding.DER) == raw
    # a DER signature handed to a RAW peer is refused, not sniffed
    with pytest.raises(MalformedSecuredMessage):
        decode_signature(raw_to_der(raw), SignatureEncoding.RAW)


@given(st.binary(min_size=64, max_size=64))
def test_raw_der_raw_round_trip(raw: bytes) -> None:
    assert der_to_raw(raw_to_der(raw)) == raw


@given(st.binary(max_size=80))
def test_der_decoding_accepts_only_the_canonical_form(data: bytes) -> None:
    # Strictness as a property: whatever decodes must re-encode to the very same bytes.
    try:
        raw = der_to_raw(data)
    except MalformedSecuredMessage:
        return
    assert raw_to_der(raw) == data


@given(st.binary(min_size=64, max_size=64), st.data())
def test_mutated_der_never_decodes_to_another_value_silently(
    raw: bytes, draw: st.DataObject
) -> None:
    der = bytearray(raw_to_der(raw))
    index = draw.draw(st.integers(0, len(der) - 1))
    der[index] ^= draw.draw(st.integers(1, 255))
    try:
        decoded = der_to_raw(bytes(der))
    except MalformedSecuredMessage:
        return
    assert raw_to_der(decoded) == bytes(der)  # a different but canonical encoding, never lax


def test_base64_is_strict() -> None:
    assert b64decode(b64encode(b"\x00\xff" * 40), field="cainfo") == b"\x00\xff" * 40
    for bad in ("abc", "ab!=", "YWJj\nZGVm", " YWJj", 12, None):
        with pytest.raises(MalformedSecuredMessage, match="cainfo"):
            b64decode(bad, field="cainfo")
    assert b64decode("YWJj\r\nZGVm", field="cainfo", allow_line_breaks=True) == b"abcdef"

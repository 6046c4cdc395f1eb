"""The one SM2 signature codec: raw ``r || s``, strict DER, and the Base64 that carries them.

GM/T 0009 encodes a signature as DER ``SEQUENCE { INTEGER r, INTEGER s }``; HSMs and the
platform's APIs often carry the raw 64 bytes ``r || s`` (each left-padded to 32 bytes), in
Base64 on the wire. Mixing the two up is one of the commonest interoperability failures, so the
choice is an explicit :class:`SignatureEncoding`, never a guess from the length.

DER is decoded strictly: exactly one encoding is accepted for each (r, s), so a signature cannot
be re-encoded into a second valid form (malleability) and a parser difference cannot hide bytes.
Rejected: long-form or indefinite lengths, lengths that do not match, trailing bytes after the
SEQUENCE, non-minimal INTEGERs (a superfluous leading ``00``), negative INTEGERs, empty
INTEGERs, and values wider than 256 bits. Because r and s are below 2**256 the whole SEQUENCE is
at most 72 bytes, so DER always uses the short length form here. Hand-written (forty lines) so
that every refusal names its rule; property tests (tests/hsm/sm/test_signature.py) hold
it to "decodes only what it re-encodes".

The byte-level functions map every 64-byte raw value to DER and back; :class:`Signature` is
the checked value (r and s in [1, n-1]) that the ``hsm`` package's token operations return.
"""

from __future__ import annotations

import base64
import binascii
import enum
from dataclasses import dataclass

from hsm.sm.errors import MalformedEncoding

# the order n of sm2p256v1's base point (GB/T 32918.5); the curve lives in hsm.sm.sm2
_N = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123

RAW_SIGNATURE_LENGTH = 64
_SCALAR = 32
_SEQUENCE = 0x30
_INTEGER = 0x02


class SignatureEncoding(enum.Enum):
    """How a peer or token writes SM2 signatures (before any Base64)."""

    RAW = "raw"  # r || s, 64 bytes
    DER = "der"  # SEQUENCE { INTEGER r, INTEGER s }


@dataclass(frozen=True)
class Signature:
    """An SM2 signature (r, s) with r and s in [1, n-1]."""

    r: int
    s: int

    def __post_init__(self) -> None:
        if not (1 <= self.r < _N and 1 <= self.s < _N):
            raise MalformedEncoding("signature", "SM2 signature r and s must be in [1, n-1]")

    @classmethod
    def from_raw(cls, data: bytes, *, field: str = "signature") -> Signature:
        r, s = _split_raw(data, field)
        return cls(r, s)

    @classmethod
    def from_der(cls, data: bytes, *, field: str = "signature") -> Signature:
        return cls.from_raw(der_to_raw(data, field=field), field=field)

    @classmethod
    def decode(
        cls, data: bytes, encoding: SignatureEncoding, *, field: str = "signature"
    ) -> Signature:
        return cls.from_raw(decode_signature(data, encoding, field=field), field=field)

    @classmethod
    def from_b64(
        cls, text: object, encoding: SignatureEncoding, *, field: str = "signature"
    ) -> Signature:
        return cls.decode(b64decode(text, field=field), encoding, field=field)

    def to_raw(self) -> bytes:
        return self.r.to_bytes(_SCALAR, "big") + self.s.to_bytes(_SCALAR, "big")

    def to_der(self) -> bytes:
        return raw_to_der(self.to_raw())

    def encode(self, encoding: SignatureEncoding) -> bytes:
        return encode_signature(self.to_raw(), encoding)

    def to_b64(self, encoding: SignatureEncoding) -> str:
        return b64encode(self.encode(encoding))


def raw_to_der(raw: bytes, *, field: str = "signature") -> bytes:
    """DER ``SEQUENCE { r, s }`` of a raw 64-byte ``r || s``."""
    r, s = _split_raw(raw, field)
    body = _der_integer(r) + _der_integer(s)
    return bytes((_SEQUENCE, len(body))) + body


def der_to_raw(der: bytes, *, field: str = "signature") -> bytes:
    """Raw ``r || s`` of a strictly DER-encoded signature; MalformedEncoding otherwise."""
    if len(der) < 2 or der[0] != _SEQUENCE:
        raise MalformedEncoding(field, "DER signature is not a SEQUENCE")
    length = der[1]
    if length & 0x80:
        raise MalformedEncoding(field, "DER signature uses a long-form length")
    if length != len(der) - 2:
        raise MalformedEncoding(field, "DER signature length does not match its bytes")
    r, rest = _read_integer(der[2:], field)
    s, rest = _read_integer(rest, field)
    if rest:
        raise MalformedEncoding(field, "DER signature has bytes after s")
    return r.to_bytes(_SCALAR, "big") + s.to_bytes(_SCALAR, "big")


def encode_signature(raw: bytes, encoding: SignatureEncoding, *, field: str = "signature") -> bytes:
    """``raw`` (r || s) written in ``encoding``."""
    if encoding is SignatureEncoding.DER:
        return raw_to_der(raw, field=field)
    _split_raw(raw, field)
    return bytes(raw)


def decode_signature(
    data: bytes, encoding: SignatureEncoding, *, field: str = "signature"
) -> bytes:
    """Raw ``r || s`` from a signature written in ``encoding``."""
    if encoding is SignatureEncoding.DER:
        return der_to_raw(data, field=field)
    _split_raw(data, field)
    return bytes(data)


def b64encode(data: bytes) -> str:
    """Standard Base64 (RFC 4648 §4) with padding and no line breaks."""
    return base64.b64encode(data).decode("ascii")


def b64decode(text: object, *, field: str, allow_line_breaks: bool = False) -> bytes:
    """Decode standard Base64 strictly: only the alphabet and correct padding.

    ``allow_line_breaks`` accepts the CR/LF that MIME-style encoders (Java's
    ``Base64.getMimeEncoder``) insert every 76 characters; nothing else is tolerated.
    """
    if not isinstance(text, str):
        raise MalformedEncoding(field, "is not a Base64 string")
    if allow_line_breaks:
        text = text.replace("\r", "").replace("\n", "")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise MalformedEncoding(field, "is not valid Base64") from None


def _split_raw(raw: bytes, field: str) -> tuple[int, int]:
    if len(raw) != RAW_SIGNATURE_LENGTH:
        raise MalformedEncoding(
            field, f"raw SM2 signature must be {RAW_SIGNATURE_LENGTH} bytes (r || s)"
        )
    return int.from_bytes(raw[:_SCALAR], "big"), int.from_bytes(raw[_SCALAR:], "big")


def _der_integer(value: int) -> bytes:
    # Minimal two's complement of a non-negative value: one leading 00 when the top bit is set.
    content = value.to_bytes(value.bit_length() // 8 + 1, "big")
    return bytes((_INTEGER, len(content))) + content


def _read_integer(data: bytes, field: str) -> tuple[int, bytes]:
    if len(data) < 2 or data[0] != _INTEGER:
        raise MalformedEncoding(field, "DER signature element is not an INTEGER")
    length = data[1]
    if length & 0x80:
        raise MalformedEncoding(field, "DER INTEGER uses a long-form length")
    if length == 0 or length > len(data) - 2:
        raise MalformedEncoding(field, "DER INTEGER length does not match its bytes")
    content = data[2 : 2 + length]
    if content[0] & 0x80:
        raise MalformedEncoding(field, "DER INTEGER is negative")
    if length > 1 and content[0] == 0 and not content[1] & 0x80:
        raise MalformedEncoding(field, "DER INTEGER is not minimal")
    if length > _SCALAR + 1 or (length == _SCALAR + 1 and content[0] != 0):
        raise MalformedEncoding(field, "DER INTEGER is wider than 256 bits")
    return int.from_bytes(content, "big"), data[2 + length :]

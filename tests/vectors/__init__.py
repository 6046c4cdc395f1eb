"""The SM known answers (``sm.json``), read once and typed.

One file for every test that checks SM2, SM3 or SM4 against a standard's or OpenSSL's answer:
the core's own tests, the token's, the simulator's, the audit trail's. Each vector is checked
against the SM crypto core and at least one independent implementation (the OpenSSL command
line, tongsuopy or gmssl; ``tests/vectors/independent.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_DATA: dict[str, Any] = json.loads((Path(__file__).parent / "sm.json").read_text("utf-8"))


def _hex(value: str) -> bytes:
    return bytes.fromhex(value)


@dataclass(frozen=True)
class Sm3Vector:
    message: bytes
    digest: bytes


@dataclass(frozen=True)
class Sm4Vector:
    key: bytes
    iv: bytes | None
    plaintext: bytes
    ciphertext: bytes
    padded: bool


@dataclass(frozen=True)
class GcmVector:
    key: bytes
    iv: bytes
    aad: bytes
    plaintext: bytes
    ciphertext: bytes
    tag: bytes


@dataclass(frozen=True)
class Sm2Vector:
    d: int
    x: int
    y: int
    message: bytes
    user_id: bytes
    z: bytes
    e: bytes
    k: int
    r: int
    s: int

    @property
    def point(self) -> bytes:
        """The public key as ``04 || X || Y``."""
        return b"\x04" + self.x.to_bytes(32, "big") + self.y.to_bytes(32, "big")

    @property
    def signature_rs(self) -> bytes:
        return self.r.to_bytes(32, "big") + self.s.to_bytes(32, "big")


SM3 = [Sm3Vector(_hex(v["message"]), _hex(v["digest"])) for v in _DATA["sm3"]]
SM4_ECB = [
    Sm4Vector(_hex(v["key"]), None, _hex(v["plaintext"]), _hex(v["ciphertext"]), False)
    for v in _DATA["sm4_ecb"]
]
SM4_CBC = [
    Sm4Vector(
        _hex(v["key"]), _hex(v["iv"]), _hex(v["plaintext"]), _hex(v["ciphertext"]), v["padded"]
    )
    for v in _DATA["sm4_cbc"]
]
SM4_GCM = [
    GcmVector(*(_hex(v[name]) for name in ("key", "iv", "aad", "plaintext", "ciphertext", "tag")))
    for v in _DATA["sm4_gcm"]
]
SM2 = [
    Sm2Vector(
        d=int(v["d"], 16),
        x=int(v["xA"], 16),
        y=int(v["yA"], 16),
        message=_hex(v["message"]),
        user_id=_hex(v["user_id"]),
        z=_hex(v["Z"]),
        e=_hex(v["e"]),
        k=int(v["k"], 16),
        r=int(v["r"], 16),
        s=int(v["s"], 16),
    )
    for v in _DATA["sm2_sign"]
]
#: GM/T 0003.5 annex A, the vector most tests use
SM2_GMT = SM2[0]
#: the pseudonym construction ``sm4-cbc-mac`` (hsm/pseudonym.py): construction text and vectors
SM4_CBC_MAC: dict[str, Any] = _DATA["sm4_cbc_mac"]

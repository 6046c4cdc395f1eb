"""SM2 arithmetic the host needs without a private key: Z, e, and checked key parsing.

Signing is SM3-with-SM2 (GB/T 32918.2, GM/T 0009): ``Z = SM3(ENTL || ID || a || b || xG || yG ||
xA || yA)`` with ENTL the user ID's length in **bits**, then ``e = SM3(Z || M)``. Z depends on
the signer's public key and user ID, which is why a signature made with one user ID never
verifies with another: the user ID is configuration on both sides, never a constant in code.

Keys travel as Base64 on this platform: the private scalar often as 33 bytes with a leading
``00`` (a Java ``BigInteger.toByteArray()``), the public key as ``04 || X || Y``. Both forms are
parsed here and checked (scalar in [1, n-2], point on the curve) so that a wrong key fails at
start-up with a named error rather than as "signature does not verify" at the first request.
"""

from __future__ import annotations

from dataclasses import dataclass

from hsm.sm2 import DEFAULT_USER_ID as DEFAULT_USER_ID

# The curve (sm2p256v1, GB/T 32918.5), the GM/T 0009 default ID and SM3 have one home: hsm.sm2.
from hsm.sm2 import GX, GY, A, B, N, P, sm3
from sidecar.platform.security.encoding import b64decode
from sidecar.platform.security.errors import KeyMaterialInvalid, MalformedSecuredMessage

MAX_USER_ID_BYTES = 0xFFFF // 8  # ENTL is a 16-bit bit count

__all__ = ["DEFAULT_USER_ID", "GX", "GY", "MAX_USER_ID_BYTES", "N", "P", "Sm2PublicKey", "sm3"]


@dataclass(frozen=True)
class Sm2PublicKey:
    """A point on sm2p256v1, checked on construction."""

    x: int
    y: int

    def __post_init__(self) -> None:
        if not (0 <= self.x < P and 0 <= self.y < P):
            raise KeyMaterialInvalid("sm2 public key", "coordinates out of range")
        if (self.y * self.y - (self.x**3 + A * self.x + B)) % P:
            raise KeyMaterialInvalid("sm2 public key", "not a point on sm2p256v1")

    @classmethod
    def from_bytes(cls, point: bytes) -> Sm2PublicKey:
        """From the uncompressed point ``04 || X || Y`` (65 bytes)."""
        if len(point) != 65 or point[0] != 0x04:
            raise KeyMaterialInvalid("sm2 public key", "must be 65 bytes 04 || X || Y")
        return cls(int.from_bytes(point[1:33], "big"), int.from_bytes(point[33:], "big"))

    @classmethod
    def from_base64(cls, text: str) -> Sm2PublicKey:
        """From Base64 of ``04 || X || Y``, the form the platform hands out."""
        try:
            return cls.from_bytes(b64decode(text, field="sm2 public key"))
        except MalformedSecuredMessage as exc:
            raise KeyMaterialInvalid(exc.field, exc.reason) from None

    def to_bytes(self) -> bytes:
        return b"\x04" + self.x.to_bytes(32, "big") + self.y.to_bytes(32, "big")


def parse_private_scalar(data: bytes) -> int:
    """The private scalar d from 32 bytes, or 33 bytes with a leading 00 (Java BigInteger)."""
    if len(data) == 33 and data[0] == 0:
        data = data[1:]
    if len(data) != 32:
        raise KeyMaterialInvalid("sm2 private key", "must be 32 bytes (or 33 with a leading 00)")
    d = int.from_bytes(data, "big")
    # d = n-1 is excluded by GB/T 32918.1: (1 + d) must be invertible mod n.
    if not 1 <= d <= N - 2:
        raise KeyMaterialInvalid("sm2 private key", "scalar out of range [1, n-2]")
    return d


def private_scalar_from_base64(text: str) -> int:
    try:
        return parse_private_scalar(b64decode(text, field="sm2 private key"))
    except MalformedSecuredMessage as exc:
        raise KeyMaterialInvalid(exc.field, exc.reason) from None


def check_user_id(user_id: bytes) -> bytes:
    if not isinstance(user_id, bytes) or not user_id:
        raise KeyMaterialInvalid("sm2 user id", "must be non-empty bytes")
    if len(user_id) > MAX_USER_ID_BYTES:
        raise KeyMaterialInvalid("sm2 user id", f"at most {MAX_USER_ID_BYTES} bytes")
    return user_id


def compute_z(public_key: Sm2PublicKey, user_id: bytes) -> bytes:
    """Z = SM3(ENTL || ID || a || b || xG || yG || xA || yA)."""
    check_user_id(user_id)
    parts = (A, B, GX, GY, public_key.x, public_key.y)
    entl = (len(user_id) * 8).to_bytes(2, "big")
    return sm3(entl + user_id + b"".join(v.to_bytes(32, "big") for v in parts))


def compute_e(public_key: Sm2PublicKey, user_id: bytes, message: bytes) -> bytes:
    """e = SM3(Z || M), the 32 bytes the SM2 signature equation signs."""
    return sm3(compute_z(public_key, user_id) + message)

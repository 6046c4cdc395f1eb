"""SM2 without a private key: the curve, the public-key type, Z and e, host verification.

Signing is SM3-with-SM2 (GB/T 32918.2, GM/T 0009): ``Z = SM3(ENTL || ID || a || b || xG || yG ||
xA || yA)`` with ENTL the user ID's length in **bits**, then ``e = SM3(Z || M)``. Z depends on
the signer's public key and user ID, which is why a signature made with one user ID never
verifies with another: the user ID is configuration on both sides, never a constant in code.
:func:`compute_z` and :func:`compute_e` take keyword arguments only, so a message can never be
passed where the user ID belongs (both are bytes).

:class:`Sm2PublicKey` is the one public-key type of the code base: parsed from the uncompressed
point, Base64 (the platform's form), a SubjectPublicKeyInfo (DER or PEM) or a PKCS#11
``CKA_EC_POINT``, and checked to be on the curve, so a wrong key fails at start-up with a named
error rather than as "signature does not verify" at the first request. Private scalars arrive
from the platform as Base64 of 32 bytes, or of 33 with a leading ``00`` (Java's
``BigInteger.toByteArray()``); :func:`parse_private_scalar` accepts both.

:class:`HostSm2Verifier` verifies a peer's signatures under one key and user ID, on the
backend :mod:`hsm.sm.backend` picks. Private keys are the HSM's business (``hsm.sm2``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Any

from hsm.sm import backend as native
from hsm.sm.backend import BackendChoice, Sm2Backend
from hsm.sm.errors import KeyMaterialInvalid, MalformedEncoding
from hsm.sm.signature import RAW_SIGNATURE_LENGTH, b64decode
from hsm.sm.sm3 import sm3

# sm2p256v1, GB/T 32918.5
P = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF
A = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC
B = 0x28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93
N = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123
GX = 0x32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7
GY = 0xBC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0

DEFAULT_USER_ID = b"1234567812345678"  # GM/T 0009
MAX_USER_ID_BYTES = 0xFFFF // 8  # ENTL is a 16-bit bit count
SM2_CURVE_OID = "1.2.156.10197.1.301"
SM2_WITH_SM3_OID = "1.2.156.10197.1.501"
EC_PUBLIC_KEY_OID = "1.2.840.10045.2.1"
# DER of the curve OID, i.e. CKA_EC_PARAMS of an SM2 key
SM2_EC_PARAMS = bytes.fromhex("06082a811ccf5501822d")
# SubjectPublicKeyInfo prefix: SEQ{ SEQ{ id-ecPublicKey, sm2p256v1 }, BIT STRING 00 04...}
_SPKI_PREFIX = bytes.fromhex("3059301306072a8648ce3d020106082a811ccf5501822d034200")
_KEY = "sm2 public key"


def _b32(v: int) -> bytes:
    return v.to_bytes(32, "big")


@dataclass(frozen=True)
class Sm2PublicKey:
    """A point on sm2p256v1, checked on construction."""

    x: int
    y: int

    def __post_init__(self) -> None:
        if not (0 <= self.x < P and 0 <= self.y < P):
            raise KeyMaterialInvalid(_KEY, "coordinates out of range")
        if (self.y * self.y - (self.x**3 + A * self.x + B)) % P:
            raise KeyMaterialInvalid(_KEY, "not a point on sm2p256v1")

    @classmethod
    def from_bytes(cls, point: bytes) -> Sm2PublicKey:
        """From the uncompressed point ``04 || X || Y`` (65 bytes)."""
        if len(point) != 65 or point[0] != 0x04:
            raise KeyMaterialInvalid(_KEY, "must be 65 bytes 04 || X || Y (uncompressed)")
        return cls(int.from_bytes(point[1:33], "big"), int.from_bytes(point[33:], "big"))

    @classmethod
    def from_base64(cls, text: str) -> Sm2PublicKey:
        """From Base64 of ``04 || X || Y``, the form the platform hands out."""
        try:
            return cls.from_bytes(b64decode(text, field=_KEY))
        except MalformedEncoding as exc:
            raise KeyMaterialInvalid(exc.field, exc.reason) from None

    @classmethod
    def from_ec_point(cls, value: bytes) -> Sm2PublicKey:
        """From CKA_EC_POINT: a DER OCTET STRING (PKCS#11) or, on some modules, raw."""
        if len(value) == 67 and value[:2] == b"\x04\x41":
            value = value[2:]
        return cls.from_bytes(value)

    @classmethod
    def from_spki_der(cls, der: bytes) -> Sm2PublicKey:
        if len(der) != len(_SPKI_PREFIX) + 65 or not der.startswith(_SPKI_PREFIX):
            raise MalformedEncoding(
                _KEY,
                "not an SM2 SubjectPublicKeyInfo "
                f"(id-ecPublicKey with named curve {SM2_CURVE_OID})",
            )
        return cls.from_bytes(der[len(_SPKI_PREFIX) :])

    @classmethod
    def from_pem(cls, pem: str | bytes) -> Sm2PublicKey:
        text = pem.decode("ascii", "replace") if isinstance(pem, bytes) else pem
        lines = [ln.strip() for ln in text.strip().splitlines()]
        if (
            len(lines) < 3
            or lines[0] != "-----BEGIN PUBLIC KEY-----"
            or lines[-1] != "-----END PUBLIC KEY-----"
        ):
            raise MalformedEncoding(_KEY, "PEM must be a BEGIN/END PUBLIC KEY block")
        try:
            der = base64.b64decode("".join(lines[1:-1]), validate=True)
        except binascii.Error:
            raise MalformedEncoding(_KEY, "PEM has invalid Base64") from None
        return cls.from_spki_der(der)

    def to_bytes(self) -> bytes:
        """The uncompressed point ``04 || X || Y``."""
        return b"\x04" + _b32(self.x) + _b32(self.y)

    # The hsm package's name for to_bytes, still called by sidecar/security_link.py.
    uncompressed = to_bytes

    def ec_point_attribute(self) -> bytes:
        """CKA_EC_POINT value: DER OCTET STRING of the uncompressed point."""
        return b"\x04\x41" + self.to_bytes()

    def spki_der(self) -> bytes:
        return _SPKI_PREFIX + self.to_bytes()

    def pem(self) -> str:
        b64 = base64.b64encode(self.spki_der()).decode("ascii")
        body = "\n".join(b64[i : i + 64] for i in range(0, len(b64), 64))
        return f"-----BEGIN PUBLIC KEY-----\n{body}\n-----END PUBLIC KEY-----\n"

    def fingerprint(self) -> str:
        """SHA-256 of the DER SubjectPublicKeyInfo, hex."""
        return hashlib.sha256(self.spki_der()).hexdigest()


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
    except MalformedEncoding as exc:
        raise KeyMaterialInvalid(exc.field, exc.reason) from None


def check_user_id(user_id: bytes) -> bytes:
    if not isinstance(user_id, bytes) or not user_id:
        raise KeyMaterialInvalid("sm2 user id", "must be non-empty bytes")
    if len(user_id) > MAX_USER_ID_BYTES:
        raise KeyMaterialInvalid("sm2 user id", f"at most {MAX_USER_ID_BYTES} bytes")
    return user_id


def compute_z(*, public_key: Sm2PublicKey, user_id: bytes) -> bytes:
    """Z = SM3(ENTL || ID || a || b || xG || yG || xA || yA)."""
    check_user_id(user_id)
    parts = (A, B, GX, GY, public_key.x, public_key.y)
    entl = (len(user_id) * 8).to_bytes(2, "big")
    return sm3(entl + user_id + b"".join(_b32(v) for v in parts))


def compute_e(*, public_key: Sm2PublicKey, message: bytes, user_id: bytes) -> bytes:
    """e = SM3(Z || M), the 32 bytes the SM2 signature equation signs."""
    return sm3(compute_z(public_key=public_key, user_id=user_id) + message)


def e_from_z(z: bytes, message: bytes) -> bytes:
    """e = SM3(Z || M) for a signer that computed its Z once."""
    return sm3(z + message)


def choose_backend(choice: BackendChoice, user_id: bytes) -> Sm2Backend:
    """The SM2 backend for ``user_id``, or KeyMaterialInvalid if ``choice`` cannot serve it."""
    picked = native.choose_sm2(choice, default_user_id=user_id == DEFAULT_USER_ID)
    if picked is None:
        raise KeyMaterialInvalid(
            "sm2 backend", f"{choice} is not installed or cannot use this user ID"
        )
    return picked


class HostSm2Verifier:
    """Verifies SM3-with-SM2 signatures under one public key and user ID (no private key)."""

    def __init__(
        self,
        public_key: Sm2PublicKey,
        *,
        user_id: bytes = DEFAULT_USER_ID,
        backend: BackendChoice = "auto",
    ) -> None:
        self.public_key = public_key
        self.user_id = check_user_id(user_id)
        self.backend: Sm2Backend = choose_backend(backend, self.user_id)
        self._key: Any = native.public_key_object(self.backend, public_key.x, public_key.y)
        self._z: bytes | None = None

    def verify(self, message: bytes, signature_rs: bytes) -> bool:
        """Whether ``signature_rs`` (raw r || s) signs ``message``. Never raises for a bad
        signature, including one of the wrong length or with r or s out of range."""
        if not _in_range(signature_rs):
            return False
        if self.backend == "tongsuopy":
            return native.verify_message(self._key, message, signature_rs)
        if self._z is None:
            self._z = compute_z(public_key=self.public_key, user_id=self.user_id)
        return native.verify_e(self.backend, self._key, e_from_z(self._z, message), signature_rs)

    def verify_e(self, e: bytes, signature_rs: bytes) -> bool:
        """Whether ``signature_rs`` signs a precomputed e (any user ID went into e)."""
        if len(e) != 32 or not _in_range(signature_rs):
            return False
        if self.backend != "tongsuopy":
            return native.verify_e(self.backend, self._key, e, signature_rs)
        which = native.e_backend()  # tongsuopy's public API takes messages only
        key = native.public_key_object(which, self.public_key.x, self.public_key.y)
        return native.verify_e(which, key, e, signature_rs)


def _in_range(signature_rs: bytes) -> bool:
    if len(signature_rs) != RAW_SIGNATURE_LENGTH:
        return False
    r = int.from_bytes(signature_rs[:32], "big")
    s = int.from_bytes(signature_rs[32:], "big")
    return 1 <= r < N and 1 <= s < N

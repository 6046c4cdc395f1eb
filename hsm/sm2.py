"""SM2 signatures: Z and e on the host, the private-key operation in the token.

Signing (GB/T 32918.2, GM/T 0009): Z = SM3(ENTL || ID || a || b || xG || yG ||
xA || yA) with ENTL the ID length in *bits*, e = SM3(Z || M).  The host
computes both with pyca ``cryptography`` (OpenSSL SM3, ~260,000 hashes/s) and
the token signs the 32-byte e (profile operation ``sm2_sign_e``), so the user
ID is configurable and the message never travels to the HSM.

Verification of the platform's signatures, measured with
``benchmarks/bench_hsm.py`` on this 2-core machine (default ID, 200-byte
messages, one thread each; the machine was shared with other jobs, so the
spread across three runs is given):

* host, tongsuopy (Tongsuo's pyca fork, native SM2, Z and e included):
  1,220-1,610 verifications/s;
* token, C_Verify of a host-computed e with an imported session public-key
  object (patched SoftHSM): 1,010-1,780/s, or 950-1,500/s including the host
  Z/e computation.

The raw rates are on a par, so the choice rests on what each path costs the
rest of the system: a token verification occupies a pool session (signing
throughput drops by the same amount), and with a network HSM it adds a
network round trip per call, while host verification scales with host cores
and needs no HSM at all.  :class:`HostVerifier` is therefore the default.
tongsuopy computes Z itself with the GM/T 0009 default ID only, so for any
other user ID the host path falls back to ``gmssl`` (pure Python, ~90/s)
verifying our host-computed e; :func:`verify_e_in_token` stays available (and
is tested) for deployments that must verify inside the HSM.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from asn1crypto import algos  # type: ignore[import-untyped]
from cryptography.hazmat.primitives import hashes
from pkcs11 import exceptions as p11e

from hsm.errors import ConfigError, InvalidSignature, MalformedInput, PolicyError, TokenError

if TYPE_CHECKING:
    from hsm.mechanisms import Registered
    from hsm.token import HsmToken, WorkerSession

# sm2p256v1, GB/T 32918.5
P = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF
A = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC
B = 0x28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93
N = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123
GX = 0x32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7
GY = 0xBC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0

DEFAULT_USER_ID = b"1234567812345678"
SM2_CURVE_OID = "1.2.156.10197.1.301"
SM2_WITH_SM3_OID = "1.2.156.10197.1.501"
EC_PUBLIC_KEY_OID = "1.2.840.10045.2.1"
# DER of the curve OID, i.e. CKA_EC_PARAMS of an SM2 key
SM2_EC_PARAMS = bytes.fromhex("06082a811ccf5501822d")
# SubjectPublicKeyInfo prefix: SEQ{ SEQ{ id-ecPublicKey, sm2p256v1 }, BIT STRING 00 04...}
_SPKI_PREFIX = bytes.fromhex("3059301306072a8648ce3d020106082a811ccf5501822d034200")

Encoding = Literal["der", "raw", "der-b64", "raw-b64"]
ENCODINGS: tuple[Encoding, ...] = ("der", "raw", "der-b64", "raw-b64")


def sm3(data: bytes) -> bytes:
    """SM3 digest on the host (OpenSSL via pyca cryptography)."""
    h = hashes.Hash(hashes.SM3())
    h.update(data)
    return h.finalize()


def _b32(v: int) -> bytes:
    return v.to_bytes(32, "big")


@dataclass(frozen=True)
class Sm2PublicKey:
    """A point on sm2p256v1, checked to be on the curve."""

    x: int
    y: int

    def __post_init__(self) -> None:
        if not (0 <= self.x < P and 0 <= self.y < P):
            raise MalformedInput("SM2 public key coordinates out of range")
        if (self.y * self.y - (self.x**3 + A * self.x + B)) % P != 0:
            raise MalformedInput("SM2 public key is not a point on sm2p256v1")

    @classmethod
    def from_uncompressed(cls, point: bytes) -> Sm2PublicKey:
        if len(point) != 65 or point[0] != 0x04:
            raise MalformedInput("SM2 public key must be an uncompressed point (04 || X || Y)")
        return cls(int.from_bytes(point[1:33], "big"), int.from_bytes(point[33:], "big"))

    @classmethod
    def from_ec_point(cls, value: bytes) -> Sm2PublicKey:
        """From CKA_EC_POINT: a DER OCTET STRING (PKCS#11) or, on some modules, raw."""
        if len(value) == 67 and value[:2] == b"\x04\x41":
            value = value[2:]
        return cls.from_uncompressed(value)

    @classmethod
    def from_spki_der(cls, der: bytes) -> Sm2PublicKey:
        if len(der) != len(_SPKI_PREFIX) + 65 or not der.startswith(_SPKI_PREFIX):
            raise MalformedInput(
                "public key is not an SM2 SubjectPublicKeyInfo "
                f"(id-ecPublicKey with named curve {SM2_CURVE_OID})"
            )
        return cls.from_uncompressed(der[len(_SPKI_PREFIX) :])

    @classmethod
    def from_pem(cls, pem: str | bytes) -> Sm2PublicKey:
        text = pem.decode("ascii", "replace") if isinstance(pem, bytes) else pem
        lines = [ln.strip() for ln in text.strip().splitlines()]
        if (
            len(lines) < 3
            or lines[0] != "-----BEGIN PUBLIC KEY-----"
            or lines[-1] != ("-----END PUBLIC KEY-----")
        ):
            raise MalformedInput("public key PEM must be a BEGIN/END PUBLIC KEY block")
        try:
            der = base64.b64decode("".join(lines[1:-1]), validate=True)
        except binascii.Error:
            raise MalformedInput("public key PEM has invalid Base64") from None
        return cls.from_spki_der(der)

    def uncompressed(self) -> bytes:
        return b"\x04" + _b32(self.x) + _b32(self.y)

    def ec_point_attribute(self) -> bytes:
        """CKA_EC_POINT value: DER OCTET STRING of the uncompressed point."""
        return b"\x04\x41" + self.uncompressed()

    def spki_der(self) -> bytes:
        return _SPKI_PREFIX + self.uncompressed()

    def pem(self) -> str:
        b64 = base64.b64encode(self.spki_der()).decode("ascii")
        body = "\n".join(b64[i : i + 64] for i in range(0, len(b64), 64))
        return f"-----BEGIN PUBLIC KEY-----\n{body}\n-----END PUBLIC KEY-----\n"

    def fingerprint(self) -> str:
        """SHA-256 of the DER SubjectPublicKeyInfo, hex."""
        return hashlib.sha256(self.spki_der()).hexdigest()


def compute_z(public_key: Sm2PublicKey, user_id: bytes = DEFAULT_USER_ID) -> bytes:
    """Z = SM3(ENTL || ID || a || b || xG || yG || xA || yA); ENTL = bit length of ID."""
    entl = len(user_id) * 8
    if entl > 0xFFFF:
        raise ConfigError(f"SM2 user ID is {len(user_id)} bytes; at most 8191 are allowed")
    return sm3(
        entl.to_bytes(2, "big")
        + user_id
        + _b32(A)
        + _b32(B)
        + _b32(GX)
        + _b32(GY)
        + _b32(public_key.x)
        + _b32(public_key.y)
    )


def compute_e(
    public_key: Sm2PublicKey,
    message: bytes,
    user_id: bytes = DEFAULT_USER_ID,
    *,
    z: bytes | None = None,
) -> bytes:
    """e = SM3(Z || M) as 32 bytes."""
    return sm3((z if z is not None else compute_z(public_key, user_id)) + message)


@dataclass(frozen=True)
class Signature:
    """An SM2 signature (r, s), with explicit DER and raw r||s codecs."""

    r: int
    s: int

    def __post_init__(self) -> None:
        if not (1 <= self.r < N and 1 <= self.s < N):
            raise MalformedInput("SM2 signature r and s must be in [1, n-1]")

    # encoders
    def to_der(self) -> bytes:
        der: bytes = algos.DSASignature({"r": self.r, "s": self.s}).dump()
        return der

    def to_raw(self) -> bytes:
        return _b32(self.r) + _b32(self.s)

    def to_der_b64(self) -> str:
        return base64.b64encode(self.to_der()).decode("ascii")

    def to_raw_b64(self) -> str:
        return base64.b64encode(self.to_raw()).decode("ascii")

    def encode(self, encoding: Encoding) -> bytes | str:
        if encoding == "der":
            return self.to_der()
        if encoding == "raw":
            return self.to_raw()
        if encoding == "der-b64":
            return self.to_der_b64()
        return self.to_raw_b64()

    # decoders
    @classmethod
    def from_raw(cls, data: bytes) -> Signature:
        if len(data) != 64:
            raise MalformedInput(f"raw SM2 signature must be 64 bytes (r || s), got {len(data)}")
        return cls(int.from_bytes(data[:32], "big"), int.from_bytes(data[32:], "big"))

    @classmethod
    def from_der(cls, data: bytes) -> Signature:
        try:
            seq = algos.DSASignature.load(data, strict=True)
            r, s = seq["r"].native, seq["s"].native
            canonical = seq.dump(force=True)
        except (ValueError, TypeError, KeyError):
            raise MalformedInput("DER SM2 signature is malformed") from None
        if not isinstance(r, int) or not isinstance(s, int) or canonical != data:
            raise MalformedInput("DER SM2 signature is not canonical DER SEQUENCE { r, s }")
        return cls(r, s)

    @classmethod
    def from_der_b64(cls, text: str | bytes) -> Signature:
        return cls.from_der(_b64decode(text, "DER SM2 signature"))

    @classmethod
    def from_raw_b64(cls, text: str | bytes) -> Signature:
        return cls.from_raw(_b64decode(text, "raw SM2 signature"))

    @classmethod
    def decode(cls, data: bytes | str, encoding: Encoding) -> Signature:
        if encoding in ("der-b64", "raw-b64"):
            raw = _b64decode(data, f"{encoding} SM2 signature")
            return cls.from_der(raw) if encoding == "der-b64" else cls.from_raw(raw)
        if isinstance(data, str):
            raise MalformedInput(f"{encoding} SM2 signature must be bytes")
        return cls.from_der(data) if encoding == "der" else cls.from_raw(data)


def _b64decode(text: str | bytes, what: str) -> bytes:
    try:
        raw = text.encode("ascii") if isinstance(text, str) else text
        return base64.b64decode(raw.strip(), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise MalformedInput(f"{what} is not valid Base64") from None


def decode_token_signature(data: bytes, encoding: Literal["raw", "der"]) -> Signature:
    """Decode what the token's C_Sign returned, per the profile's encoding."""
    return Signature.from_der(data) if encoding == "der" else Signature.from_raw(data)


# ------------------------------------------------------------------ host verification
class HostVerifier:
    """Verify SM2 signatures on the host (tongsuopy; gmssl for non-default IDs)."""

    def __init__(self) -> None:
        self._cache: dict[Sm2PublicKey, Any] = {}

    def _tongsuo_key(self, public_key: Sm2PublicKey) -> Any:
        key = self._cache.get(public_key)
        if key is None:
            from tongsuopy.crypto.asymciphers import ec  # type: ignore[import-untyped]

            key = ec.EllipticCurvePublicNumbers(public_key.x, public_key.y, ec.SM2()).public_key()
            if len(self._cache) > 64:
                self._cache.clear()
            self._cache[public_key] = key
        return key

    def verify(
        self,
        public_key: Sm2PublicKey,
        message: bytes,
        signature: Signature,
        user_id: bytes = DEFAULT_USER_ID,
    ) -> None:
        """Raise :class:`InvalidSignature` unless ``signature`` is valid for ``message``."""
        if user_id == DEFAULT_USER_ID:
            from tongsuopy.crypto import (  # type: ignore[import-untyped]
                exceptions,
            )
            from tongsuopy.crypto import (
                hashes as ts_hashes,
            )
            from tongsuopy.crypto.asymciphers import ec

            try:
                self._tongsuo_key(public_key).verify(
                    signature.to_der(), message, ec.ECDSA(ts_hashes.SM3())
                )
            except exceptions.InvalidSignature:
                raise InvalidSignature("SM2 signature does not verify") from None
            return
        self.verify_e(public_key, compute_e(public_key, message, user_id), signature)

    @staticmethod
    def verify_e(public_key: Sm2PublicKey, e: bytes, signature: Signature) -> None:
        """Verify against a host-computed e (pure-Python gmssl; any user ID)."""
        from gmssl import sm2 as gm_sm2

        crypt = gm_sm2.CryptSM2(
            private_key="", public_key=public_key.uncompressed()[1:].hex(), mode=1
        )
        if not crypt.verify(signature.to_raw().hex(), e):
            raise InvalidSignature("SM2 signature does not verify")


# ------------------------------------------------------------------ token operations
def _pub_object(ws: WorkerSession, mechs: Registered, public_key: Sm2PublicKey) -> Any:
    from pkcs11 import Attribute, ObjectClass

    cache_key = ("sm2-verify-key", public_key)
    obj = ws.cache.get(cache_key)
    if obj is None:
        obj = ws.p11.create_object(
            {
                Attribute.CLASS: ObjectClass.PUBLIC_KEY,
                Attribute.KEY_TYPE: mechs.key_type("sm2"),
                Attribute.TOKEN: False,
                Attribute.PRIVATE: False,
                Attribute.VERIFY: True,
                Attribute.EC_PARAMS: SM2_EC_PARAMS,
                Attribute.EC_POINT: public_key.ec_point_attribute(),
                Attribute.LABEL: "yibao/verify",
            }
        )
        ws.cache[cache_key] = obj
    return obj


def verify_e_in_token(
    ws: WorkerSession,
    mechs: Registered,
    encoding: Literal["raw", "der"],
    public_key: Sm2PublicKey,
    e: bytes,
    signature: Signature,
) -> bool:
    """C_Verify of e with an imported (session) public-key object."""
    key = _pub_object(ws, mechs, public_key)
    sig = signature.to_der() if encoding == "der" else signature.to_raw()
    return bool(key.verify(e, sig, mechanism=mechs.mech("sm2_verify_e")))


def sign_message_in_token(
    ws: WorkerSession,
    mechs: Registered,
    encoding: Literal["raw", "der"],
    label: str,
    message: bytes,
) -> Signature:
    """C_Sign of a whole message (``sm2_sign_message``): the token computes Z with
    the default ID and e.  Kept for HSMs without raw-e signing; :class:`Sm2Signer`
    (host Z/e, configurable ID, only 32 bytes to the HSM) is the normal path."""
    key = _find_private_key(ws, label)
    return decode_token_signature(
        key.sign(message, mechanism=mechs.mech("sm2_sign_message")), encoding
    )


class Sm2Signer:
    """Signs with one token private key; Z is computed once per signer."""

    def __init__(
        self,
        token: HsmToken,
        key_label: str,
        public_key: Sm2PublicKey,
        user_id: bytes = DEFAULT_USER_ID,
    ) -> None:
        self.token = token
        self.key_label = key_label
        self.public_key = public_key
        self.user_id = user_id
        self._z = compute_z(public_key, user_id)
        self._mech = token.mechs.mech("sm2_sign_e")
        self._encoding = token.profile.signature_encoding

    def digest(self, message: bytes) -> bytes:
        """e = SM3(Z || M) for this signer's key and user ID."""
        return sm3(self._z + message)

    def sign_e_op(self, e: bytes) -> Callable[[WorkerSession], Signature]:
        """The pool operation that signs a precomputed e."""
        if len(e) != 32:
            raise ConfigError(f"e must be 32 bytes, got {len(e)}")

        def op(ws: WorkerSession) -> Signature:
            key = ws.cache.get(("sm2-sign-key", self.key_label))
            if key is None:
                key = _find_private_key(ws, self.key_label)
                if not hasattr(key, "sign"):  # python-pkcs11 mixes in sign() only if CKA_SIGN
                    raise PolicyError(
                        f"key {self.key_label} may not sign (CKA_SIGN is false: "
                        "a previous or retired version)"
                    )
                ws.cache[("sm2-sign-key", self.key_label)] = key
            return decode_token_signature(key.sign(e, mechanism=self._mech), self._encoding)

        return op

    async def sign(self, message: bytes) -> Signature:
        try:
            return await self.token.run(self.sign_e_op(self.digest(message)))
        except p11e.PKCS11Error as exc:
            raise self._error(exc) from None

    def sign_blocking(self, message: bytes) -> Signature:
        try:
            return self.token.call(self.sign_e_op(self.digest(message)))
        except p11e.PKCS11Error as exc:
            raise self._error(exc) from None

    def _error(self, exc: Exception) -> TokenError:
        return TokenError(f"signing with key {self.key_label} failed: {type(exc).__name__}")


def _find_private_key(ws: WorkerSession, label: str) -> Any:
    from pkcs11 import Attribute, ObjectClass

    # list(): exhaust the search so C_FindObjectsFinal runs now, not at garbage collection
    objs = list(
        ws.p11.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: label})
    )
    if len(objs) != 1:
        raise TokenError(f"private key {label} not found on the token (found {len(objs)})")
    return objs[0]

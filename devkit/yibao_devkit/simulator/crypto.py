"""The simulated platform's own SM2, SM3 and SM4, independent of the sidecar's implementation.

Nothing here imports ``sidecar.platform`` or ``hsm``: tests check the sidecar against this code,
so the two must not share a line. SM3 and SM4 come from pyca ``cryptography`` (OpenSSL); SM2 from
``tongsuopy`` (Tongsuo's native SM2) or, as a fallback, the pure-Python ``gmssl``.

SM2 signatures are SM3-with-SM2 (GB/T 32918.2 with GM/T 0009): Z = SM3(ENTL || ID || a || b ||
xG || yG || xA || yA), e = SM3(Z || M). Who computes e depends on the user ID:

``tongsuopy``
    The default user ID ``1234567812345678``: ``ec.ECDSA(hashes.SM3())`` on an ``ec.SM2()`` key,
    Tongsuo computes Z and e itself. Public API only.
``tongsuopy-e``
    Any other user ID: e computed here, then signed or verified by Tongsuo's ``EVP_PKEY_sign`` /
    ``EVP_PKEY_verify`` on the SM2 key (for an SM2 key these act on a ready digest, no Z). Those
    two functions are reachable only through tongsuopy's private cffi binding (its public API
    has no way to set the ID), so the path is used after a self-test at first use: the
    GM/T 0003.5 Annex A vector must verify and a wrong e must not.
``gmssl``
    Any user ID, pure Python: e computed here, gmssl does the curve arithmetic; the nonce comes
    from :mod:`secrets` (gmssl's own is :mod:`random`). About 30 times slower.

Signatures cross this module as raw ``r || s`` (64 bytes); DER only at the Tongsuo boundary.
Rates measured on the 2-core build machine are in ``tests/devkit/simulator/test_security.py``'s
measurement (``pytest -s -k rates``).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from functools import cache
from typing import Any, Final, Literal

from cryptography.hazmat.primitives import hashes as pyca_hashes
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

DEFAULT_USER_ID: Final = b"1234567812345678"  # GM/T 0009

# sm2p256v1 (GB/T 32918.5)
_P: Final = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF
_A: Final = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC
_B: Final = 0x28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93
N: Final = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123
_GX: Final = 0x32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7
_GY: Final = 0xBC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0

BackendChoice = Literal["auto", "tongsuopy", "tongsuopy-e", "gmssl"]
Backend = Literal["tongsuopy", "tongsuopy-e", "gmssl"]


class CryptoError(ValueError):
    """Ciphertext that does not decrypt or key material that cannot be used."""


# ----------------------------------------------------------------------------- SM3 and SM4


def sm3(data: bytes) -> bytes:
    digest = pyca_hashes.Hash(pyca_hashes.SM3())
    digest.update(data)
    return digest.finalize()


def sm4_ecb_encrypt(key: bytes, plaintext: bytes) -> bytes:
    """SM4-ECB with PKCS#7 padding."""
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = _sm4(key).encryptor()
    return encryptor.update(padded) + encryptor.finalize()


def sm4_ecb_decrypt(key: bytes, ciphertext: bytes) -> bytes:
    """Inverse of :func:`sm4_ecb_encrypt`; :class:`CryptoError` for any failure, unexplained."""
    if not ciphertext or len(ciphertext) % 16:
        raise CryptoError("ciphertext does not decrypt")
    decryptor = _sm4(key).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise CryptoError("ciphertext does not decrypt") from None


def _sm4(key: bytes) -> Cipher[modes.ECB]:
    if len(key) != 16:
        raise CryptoError("an SM4 key is 16 bytes")
    return Cipher(algorithms.SM4(key), modes.ECB())  # noqa: S305 - the platform's mode


# ----------------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class PublicKey:
    """A point on sm2p256v1 (checked), with the encodings integrators ask for."""

    x: int
    y: int

    def __post_init__(self) -> None:
        on_curve = (self.y * self.y - self.x**3 - _A * self.x - _B) % _P == 0
        if not (0 <= self.x < _P and 0 <= self.y < _P and on_curve):
            raise CryptoError("not a point on sm2p256v1")

    @classmethod
    def from_point(cls, point: bytes) -> PublicKey:
        """From ``04 || X || Y`` (65 bytes)."""
        if len(point) != 65 or point[0] != 4:
            raise CryptoError("an SM2 public key is 65 bytes 04 || X || Y")
        return cls(int.from_bytes(point[1:33], "big"), int.from_bytes(point[33:], "big"))

    @classmethod
    def from_pem(cls, pem: bytes) -> PublicKey:
        """From a SubjectPublicKeyInfo PEM (id-ecPublicKey, curve 1.2.156.10197.1.301)."""
        ts = _tongsuo()
        if ts is None:
            raise CryptoError("reading PEM keys needs tongsuopy")
        try:
            key = ts.serialization.load_pem_public_key(pem)
            numbers = key.public_numbers()
        except (ValueError, TypeError, AttributeError):
            raise CryptoError("not an SM2 public key in PEM") from None
        return cls(numbers.x, numbers.y)

    @classmethod
    def parse(cls, text: str) -> PublicKey:
        """From PEM, hex of ``04||X||Y`` (130 digits) or Base64 of it, whichever ``text`` is."""
        text = text.strip()
        if text.startswith("-----BEGIN"):
            return cls.from_pem(text.encode("ascii"))
        if len(text) == 130 and all(c in "0123456789abcdefABCDEF" for c in text):
            return cls.from_point(bytes.fromhex(text))
        try:
            return cls.from_point(base64.b64decode(text, validate=True))
        except ValueError:
            raise CryptoError("expected PEM, hex or Base64 of an SM2 public key") from None

    def point(self) -> bytes:
        return b"\x04" + self.x.to_bytes(32, "big") + self.y.to_bytes(32, "big")

    def pem(self) -> str:
        """SubjectPublicKeyInfo PEM, written by hand (id-ecPublicKey + the SM2 curve OID)."""
        spki = bytes.fromhex("3059301306072a8648ce3d020106082a811ccf5501822d034200") + self.point()
        text = base64.b64encode(spki).decode("ascii")
        lines = [text[i : i + 64] for i in range(0, len(text), 64)]
        return "-----BEGIN PUBLIC KEY-----\n" + "\n".join(lines) + "\n-----END PUBLIC KEY-----\n"


class PrivateKey:
    """The platform's SM2 key pair in memory (a simulator: never a production key)."""

    def __init__(self, d: int) -> None:
        if not 1 <= d <= N - 2:
            raise CryptoError("SM2 private scalar out of range [1, n-2]")
        self._d = d
        self.public_key = _public_point(d)

    def __repr__(self) -> str:
        return f"PrivateKey(public={self.public_key.point().hex()[:18]}..., d=<hidden>)"

    @property
    def scalar(self) -> int:
        return self._d

    @classmethod
    def generate(cls) -> PrivateKey:
        return cls(secrets.randbelow(N - 2) + 1)

    @classmethod
    def for_seed(cls, seed: int) -> PrivateKey:
        """The same key for the same seed, so a restarted simulator keeps its public key."""
        stretched = hashlib.sha256(f"yibao-simulator platform sm2 key {seed}".encode()).digest()
        return cls(int.from_bytes(sm3(stretched), "big") % (N - 2) + 1)

    @classmethod
    def from_bytes(cls, data: bytes) -> PrivateKey:
        """From 32 bytes, or 33 with a leading 00 (Java ``BigInteger.toByteArray``)."""
        if len(data) == 33 and data[0] == 0:
            data = data[1:]
        if len(data) != 32:
            raise CryptoError("an SM2 private key is 32 bytes (or 33 with a leading 00)")
        return cls(int.from_bytes(data, "big"))

    @classmethod
    def parse(cls, text: str) -> PrivateKey:
        """From a PKCS#8/SEC1 PEM, hex (64 digits) or Base64 of the scalar."""
        text = text.strip()
        if text.startswith("-----BEGIN"):
            ts = _tongsuo()
            if ts is None:
                raise CryptoError("reading PEM keys needs tongsuopy")
            try:
                key = ts.serialization.load_pem_private_key(text.encode("ascii"), password=None)
                return cls(int(key.private_numbers().private_value))
            except (ValueError, TypeError, AttributeError):
                raise CryptoError("not an unencrypted SM2 private key in PEM") from None
        if len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text):
            return cls(int(text, 16))
        try:
            return cls.from_bytes(base64.b64decode(text, validate=True))
        except ValueError:
            raise CryptoError("expected PEM, hex or Base64 of an SM2 private key") from None

    def base64(self) -> str:
        return base64.b64encode(self._d.to_bytes(32, "big")).decode("ascii")


def compute_e(public_key: PublicKey, user_id: bytes, message: bytes) -> bytes:
    """e = SM3(Z || M) with Z = SM3(ENTL || ID || a || b || xG || yG || xA || yA)."""
    if not user_id or len(user_id) > 8191:
        raise CryptoError("an SM2 user ID is 1 to 8191 bytes")
    entl = (8 * len(user_id)).to_bytes(2, "big")
    curve = (_A, _B, _GX, _GY, public_key.x, public_key.y)
    z = sm3(entl + user_id + b"".join(v.to_bytes(32, "big") for v in curve))
    return sm3(z + message)


# ----------------------------------------------------------------------------- signatures


class Signer:
    """SM3-with-SM2 signatures (raw ``r || s``) with one private key and user ID."""

    def __init__(
        self, key: PrivateKey, *, user_id: bytes = DEFAULT_USER_ID, backend: BackendChoice = "auto"
    ) -> None:
        self.key = key
        self.user_id = bytes(user_id)
        self.backend = _choose(backend, self.user_id)
        ts = _tongsuo()
        if self.backend == "gmssl":
            self._native: Any = _gmssl_context(f"{key.scalar:064x}", key.public_key)
        else:
            assert ts is not None
            self._native = ts.ec.derive_private_key(key.scalar, ts.ec.SM2())

    def sign(self, message: bytes) -> bytes:
        if self.backend == "tongsuopy":
            ts = _tongsuo()
            assert ts is not None
            der = self._native.sign(message, ts.ec.ECDSA(ts.hashes.SM3()))
            return _der_to_raw(der)
        e = compute_e(self.key.public_key, self.user_id, message)
        if self.backend == "tongsuopy-e":
            raw_e = _raw_e()
            assert raw_e is not None
            return _der_to_raw(raw_e.sign(self._native, e))
        while True:  # gmssl answers None in the negligible r = 0 / r + k = n / s = 0 cases
            k = secrets.randbelow(N - 1) + 1
            signature = self._native.sign(e, f"{k:064x}")
            if signature is not None:
                return bytes.fromhex(signature)


class Verifier:
    """Checks SM3-with-SM2 signatures (raw ``r || s``) under one public key and user ID."""

    def __init__(
        self,
        key: PublicKey,
        *,
        user_id: bytes = DEFAULT_USER_ID,
        backend: BackendChoice = "auto",
    ) -> None:
        self.key = key
        self.user_id = bytes(user_id)
        self.backend = _choose(backend, self.user_id)
        ts = _tongsuo()
        if self.backend == "gmssl":
            self._native: Any = _gmssl_context("", key)
        else:
            assert ts is not None
            self._native = ts.ec.EllipticCurvePublicNumbers(key.x, key.y, ts.ec.SM2()).public_key()

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` (raw r || s) signs ``message``; never raises for a bad one."""
        if len(signature) != 64:
            return False
        r = int.from_bytes(signature[:32], "big")
        s = int.from_bytes(signature[32:], "big")
        if not (0 < r < N and 0 < s < N):
            return False
        if self.backend == "tongsuopy":
            ts = _tongsuo()
            assert ts is not None
            try:
                self._native.verify(_der(r, s), message, ts.ec.ECDSA(ts.hashes.SM3()))
            except ts.InvalidSignature:
                return False
            return True
        e = compute_e(self.key, self.user_id, message)
        if self.backend == "tongsuopy-e":
            raw_e = _raw_e()
            assert raw_e is not None
            return raw_e.verify(self._native, e, _der(r, s))
        return bool(self._native.verify(signature.hex(), e))


def _der(r: int, s: int) -> bytes:
    ts = _tongsuo()
    assert ts is not None
    return bytes(ts.encode_dss_signature(r, s))


def _der_to_raw(der: bytes) -> bytes:
    ts = _tongsuo()
    assert ts is not None
    r, s = ts.decode_dss_signature(der)
    return int(r).to_bytes(32, "big") + int(s).to_bytes(32, "big")


# ------------------------------------------------------------------------------- backends


@cache
def _tongsuo() -> Any:
    """tongsuopy's modules, or None when it is not installed."""
    try:
        from tongsuopy.crypto import (  # type: ignore[import-untyped]
            exceptions,
            hashes,
            serialization,
        )
        from tongsuopy.crypto.asymciphers import ec, utils  # type: ignore[import-untyped]
    except ImportError:
        return None

    class Modules:
        pass

    modules = Modules()
    for name, value in {
        "ec": ec,
        "hashes": hashes,
        "serialization": serialization,
        "InvalidSignature": exceptions.InvalidSignature,
        "encode_dss_signature": utils.encode_dss_signature,
        "decode_dss_signature": getattr(utils, "decode_dss_signature", None)
        or _decode_dss_fallback,
    }.items():
        setattr(modules, name, value)
    return modules


def _decode_dss_fallback(der: bytes) -> tuple[int, int]:
    """DER ``SEQUENCE { INTEGER r, INTEGER s }`` as it comes from Tongsuo (short lengths)."""
    if len(der) < 8 or der[0] != 0x30 or der[1] != len(der) - 2:
        raise CryptoError("not a DER SM2 signature")
    values: list[int] = []
    rest = der[2:]
    for _ in range(2):
        if len(rest) < 2 or rest[0] != 0x02:
            raise CryptoError("not a DER SM2 signature")
        size = rest[1]
        values.append(int.from_bytes(rest[2 : 2 + size], "big"))
        rest = rest[2 + size :]
    if rest:
        raise CryptoError("not a DER SM2 signature")
    return values[0], values[1]


class _RawE:
    """Tongsuo's EVP_PKEY_sign/EVP_PKEY_verify on an SM2 key: they act on a ready 32-byte e."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self._lib = backend._lib
        self._ffi = backend._ffi

    def _ctx(self, key: Any, init: Any) -> Any:
        ctx = self._lib.EVP_PKEY_CTX_new(key._evp_pkey, self._ffi.NULL)
        if ctx == self._ffi.NULL:
            raise CryptoError("EVP_PKEY_CTX_new failed")
        ctx = self._ffi.gc(ctx, self._lib.EVP_PKEY_CTX_free)
        if init(ctx) != 1:
            self._backend._consume_errors()
            raise CryptoError("EVP_PKEY init failed")
        return ctx

    def sign(self, key: Any, e: bytes) -> bytes:
        ctx = self._ctx(key, self._lib.EVP_PKEY_sign_init)
        length = self._ffi.new("size_t *", 80)
        out = self._ffi.new("unsigned char[]", 80)
        if self._lib.EVP_PKEY_sign(ctx, out, length, e, len(e)) != 1:
            self._backend._consume_errors()
            raise CryptoError("EVP_PKEY_sign failed")
        return bytes(self._ffi.buffer(out, length[0]))

    def verify(self, key: Any, e: bytes, der: bytes) -> bool:
        ctx = self._ctx(key, self._lib.EVP_PKEY_verify_init)
        result = self._lib.EVP_PKEY_verify(ctx, der, len(der), e, len(e))
        self._backend._consume_errors()
        return bool(result == 1)


# GM/T 0003.5 Annex A: the public key, e for "message digest" under the default ID, and (r, s).
_ANNEX_A_POINT: Final = (
    0x09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020,
    0xCCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13,
)
_ANNEX_A_RS: Final = (
    0xF5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3,
    0xB1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA,
)


@cache
def _raw_e() -> _RawE | None:
    """The e-level Tongsuo path, or None unless tongsuopy is there and the self-test passes."""
    ts = _tongsuo()
    if ts is None:
        return None
    try:
        from tongsuopy.backends.tongsuo.backend import backend  # type: ignore[import-untyped]

        ops = _RawE(backend)
        point = PublicKey(*_ANNEX_A_POINT)
        native = ts.ec.EllipticCurvePublicNumbers(point.x, point.y, ts.ec.SM2()).public_key()
        e = compute_e(point, DEFAULT_USER_ID, b"message digest")
        der = _der(*_ANNEX_A_RS)
        if not ops.verify(native, e, der) or ops.verify(native, sm3(e), der):
            return None
        key = PrivateKey.generate()
        made = ops.sign(ts.ec.derive_private_key(key.scalar, ts.ec.SM2()), b"\x01" * 32)
        if not ops.verify(
            ts.ec.EllipticCurvePublicNumbers(
                key.public_key.x, key.public_key.y, ts.ec.SM2()
            ).public_key(),
            b"\x01" * 32,
            made,
        ):
            return None
    except Exception:  # any change inside tongsuopy: fall back to gmssl
        return None
    return ops


def available_backends(user_id: bytes = DEFAULT_USER_ID) -> list[Backend]:
    usable: list[Backend] = []
    if _tongsuo() is not None and user_id == DEFAULT_USER_ID:
        usable.append("tongsuopy")
    if _raw_e() is not None:
        usable.append("tongsuopy-e")
    usable.append("gmssl")
    return usable


def _choose(choice: BackendChoice, user_id: bytes) -> Backend:
    usable = available_backends(user_id)
    if choice == "auto":
        return usable[0]
    if choice not in usable:
        raise CryptoError(f"SM2 backend {choice} is not available for this user ID")
    return choice


def _gmssl_context(private_hex: str, public_key: PublicKey) -> Any:
    from gmssl import sm2 as gm_sm2

    context = gm_sm2.CryptSM2(private_key=private_hex, public_key="")
    # Set afterwards: the constructor's ``lstrip("04")`` would also eat leading 0/4 digits of X.
    context.public_key = public_key.point()[1:].hex()
    return context


def _public_point(d: int) -> PublicKey:
    ts = _tongsuo()
    if ts is not None:
        numbers = ts.ec.derive_private_key(d, ts.ec.SM2()).public_key().public_numbers()
        return PublicKey(numbers.x, numbers.y)
    from gmssl import sm2 as gm_sm2

    point = gm_sm2.CryptSM2(private_key="", public_key="")._kg(d, f"{_GX:064x}{_GY:064x}")
    return PublicKey(int(point[:64], 16), int(point[64:], 16))

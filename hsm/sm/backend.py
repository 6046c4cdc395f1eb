"""The one place that chooses the native code under the SM core.

SM3 and SM4 (ECB, CBC, GCM, HMAC-SM3) run in OpenSSL through pyca ``cryptography``: about
260,000 SM3/s, SM4 in microseconds, and it is already the sidecar's TLS and X.509 library.

SM2 (pyca has none) has three implementations, chosen once per key and user ID:

``tongsuopy``
    Tongsuo's fork of pyca/cryptography (abi3 wheel), native SM2 through its public API. That
    API computes Z itself with the GM/T 0009 default user ID and offers no way to pass another,
    so it serves the default ID only.
``tongsuopy-e``
    Any other user ID: the core computes e = SM3(Z || M) and Tongsuo signs or verifies e with
    ``EVP_PKEY_sign``/``EVP_PKEY_verify``. Those are reached through tongsuopy's *private* cffi
    binding, so the path is used only after a self-test at first use passes: the GM/T 0003.5
    vector must verify (and fail for another e), and a signature it makes must verify under the
    public path (which computes Z and e itself). Should tongsuopy change, the self-test fails
    and ``gmssl`` is used.
``gmssl``
    Pure Python, any user ID; the fallback when tongsuopy is not installed. Nonces come from
    :mod:`secrets` (gmssl's own source is the non-cryptographic :mod:`random`).

Measured on this 2-core machine, one thread, 200-byte messages, other work keeping the load
average at 1.5-3 (``python -m tests.hsm.sm.bench`` prints current figures):

==============================  ================  =================
backend                         signatures/s      verifications/s
==============================  ================  =================
tongsuopy (default user ID)     about 850-1,400   about 900-1,600
tongsuopy-e (any user ID)       about 850-1,400   about 950-1,500
gmssl (fallback, any user ID)   about 45-120      about 20-70
==============================  ================  =================

Signing with a host-held private key exists here only for the self-test and for the test
double (``tests/software_sm2.py``); the sidecar signs with keys in the HSM.
"""

from __future__ import annotations

import secrets
from functools import cache
from types import SimpleNamespace
from typing import Any, Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as pyca_hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from hsm.sm.signature import der_to_raw, raw_to_der

Sm2Backend = Literal["tongsuopy", "tongsuopy-e", "gmssl"]
BackendChoice = Literal["auto", "tongsuopy", "tongsuopy-e", "gmssl"]

Sm4Mode = modes.ECB | modes.CBC | modes.GCM

# GM/T 0003.5 Annex A (also in tests/vectors/sm.json), for the tongsuopy-e self-test: product
# code cannot read the tests' file, and this check must run wherever the core runs.
_SELF_TEST_D = 0x3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8
_SELF_TEST_MESSAGE = b"message digest"  # with the default user ID, e is _SELF_TEST_E
_SELF_TEST_KEY = (
    0x09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020,
    0xCCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13,
)
_SELF_TEST_E = bytes.fromhex("F0B43E94BA45ACCAACE692ED534382EB17E6AB5A19CE7B31F4486FDFC0D28640")
_SELF_TEST_RS = bytes.fromhex(
    "F5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3"
    "B1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA"
)


# ------------------------------------------------------------------------------ SM3, SM4
def sm3_digest(data: bytes) -> bytes:
    digest = hashes.Hash(hashes.SM3())
    digest.update(data)
    return digest.finalize()


def hmac_sm3(key: bytes, data: bytes) -> bytes:
    mac = pyca_hmac.HMAC(key, hashes.SM3())
    mac.update(data)
    return mac.finalize()


def sm4_cipher(key: bytes, mode: Sm4Mode) -> Cipher[Any]:
    """An SM4 cipher in ``mode`` (key and IV sizes are checked by the caller)."""
    return Cipher(algorithms.SM4(key), mode)


# ------------------------------------------------------------------------------ SM2
@cache
def tongsuopy() -> SimpleNamespace | None:
    """tongsuopy's modules, or None when it is not installed."""
    try:
        from tongsuopy.crypto import exceptions, hashes  # type: ignore[import-untyped]
        from tongsuopy.crypto.asymciphers import ec  # type: ignore[import-untyped]
    except ImportError:
        return None
    return SimpleNamespace(ec=ec, hashes=hashes, InvalidSignature=exceptions.InvalidSignature)


class TongsuoE:
    """SM2 sign/verify of a precomputed e through Tongsuo's EVP_PKEY_sign/verify."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self._lib = backend._lib
        self._ffi = backend._ffi

    def _context(self, key: Any, init: Any) -> Any:
        ctx = self._lib.EVP_PKEY_CTX_new(key._evp_pkey, self._ffi.NULL)
        if ctx == self._ffi.NULL:
            raise RuntimeError("EVP_PKEY_CTX_new failed")
        ctx = self._ffi.gc(ctx, self._lib.EVP_PKEY_CTX_free)
        if init(ctx) != 1:
            self._backend._consume_errors()
            raise RuntimeError("EVP_PKEY operation init failed")
        return ctx

    def verify(self, public_key: Any, e: bytes, der: bytes) -> bool:
        ctx = self._context(public_key, self._lib.EVP_PKEY_verify_init)
        result = self._lib.EVP_PKEY_verify(ctx, der, len(der), e, len(e))
        self._backend._consume_errors()
        return bool(result == 1)

    def sign(self, private_key: Any, e: bytes) -> bytes:
        ctx = self._context(private_key, self._lib.EVP_PKEY_sign_init)
        size = self._ffi.new("size_t *")
        if self._lib.EVP_PKEY_sign(ctx, self._ffi.NULL, size, e, len(e)) != 1:
            raise RuntimeError("EVP_PKEY_sign (size) failed")
        buffer = self._ffi.new("unsigned char[]", size[0])
        if self._lib.EVP_PKEY_sign(ctx, buffer, size, e, len(e)) != 1:
            raise RuntimeError("EVP_PKEY_sign failed")
        return bytes(self._ffi.buffer(buffer)[: size[0]])


@cache
def tongsuopy_e() -> TongsuoE | None:
    """The raw-e path, or None unless tongsuopy is there and its self-test passes."""
    ts = tongsuopy()
    if ts is None:
        return None
    try:
        from tongsuopy.backends.tongsuo.backend import (  # type: ignore[import-untyped]
            backend,
        )

        ops = TongsuoE(backend)
        known = ts.ec.EllipticCurvePublicNumbers(*_SELF_TEST_KEY, ts.ec.SM2()).public_key()
        der = raw_to_der(_SELF_TEST_RS)
        if not ops.verify(known, _SELF_TEST_E, der) or ops.verify(known, bytes(32), der):
            return None
        # A signature of the vector's e (fresh k) must verify over its message on the public
        # path, which computes Z and e itself.
        private = ts.ec.derive_private_key(_SELF_TEST_D, ts.ec.SM2())
        made = ops.sign(private, _SELF_TEST_E)
        private.public_key().verify(made, _SELF_TEST_MESSAGE, ts.ec.ECDSA(ts.hashes.SM3()))
    except Exception:  # any change in tongsuopy's internals: fall back, never fail
        return None
    return ops


def choose_sm2(choice: BackendChoice, *, default_user_id: bool) -> Sm2Backend | None:
    """The backend for a key used with the default user ID or another; None if unusable."""
    if choice == "auto":
        if tongsuopy() is not None and default_user_id:
            return "tongsuopy"
        return "tongsuopy-e" if tongsuopy_e() is not None else "gmssl"
    usable = {
        "tongsuopy": tongsuopy() is not None and default_user_id,
        "tongsuopy-e": tongsuopy_e() is not None,
        "gmssl": True,
    }
    return choice if usable[choice] else None


def e_backend() -> Sm2Backend:
    """The fastest backend that signs or verifies a precomputed e."""
    return "tongsuopy-e" if tongsuopy_e() is not None else "gmssl"


def public_key_object(backend: Sm2Backend, x: int, y: int) -> Any:
    if backend == "gmssl":
        return _gmssl("", x, y)
    ts = tongsuopy()
    assert ts is not None
    return ts.ec.EllipticCurvePublicNumbers(x, y, ts.ec.SM2()).public_key()


def private_key_object(backend: Sm2Backend, d: int, x: int, y: int) -> Any:
    if backend == "gmssl":
        return _gmssl(f"{d:064x}", x, y)
    ts = tongsuopy()
    assert ts is not None
    return ts.ec.derive_private_key(d, ts.ec.SM2())


def public_point(d: int, generator: tuple[int, int]) -> tuple[int, int]:
    """(x, y) of d*G."""
    ts = tongsuopy()
    if ts is not None:
        numbers = ts.ec.derive_private_key(d, ts.ec.SM2()).public_key().public_numbers()
        return numbers.x, numbers.y
    from gmssl import sm2 as gm_sm2

    point = gm_sm2.CryptSM2(private_key="", public_key="")._kg(
        d, f"{generator[0]:064x}{generator[1]:064x}"
    )
    return int(point[:64], 16), int(point[64:], 16)


def verify_message(key: Any, message: bytes, signature_rs: bytes) -> bool:
    """tongsuopy: SM3-with-SM2 over ``message`` with the default user ID."""
    ts = tongsuopy()
    assert ts is not None
    try:
        key.verify(raw_to_der(signature_rs), message, ts.ec.ECDSA(ts.hashes.SM3()))
    except ts.InvalidSignature:
        return False
    return True


def sign_message(key: Any, message: bytes) -> bytes:
    """tongsuopy: raw r || s of SM3-with-SM2 over ``message`` with the default user ID."""
    ts = tongsuopy()
    assert ts is not None
    return der_to_raw(key.sign(message, ts.ec.ECDSA(ts.hashes.SM3())))


def verify_e(backend: Sm2Backend, key: Any, e: bytes, signature_rs: bytes) -> bool:
    """Verify raw r || s over a precomputed e (``tongsuopy-e`` or ``gmssl``)."""
    if backend == "tongsuopy-e":
        ops = tongsuopy_e()
        assert ops is not None
        return ops.verify(key, e, raw_to_der(signature_rs))
    return bool(key.verify(signature_rs.hex(), e))


def sign_e(backend: Sm2Backend, key: Any, e: bytes, n: int) -> bytes:
    """Raw r || s over a precomputed e (``tongsuopy-e`` or ``gmssl``)."""
    if backend == "tongsuopy-e":
        ops = tongsuopy_e()
        assert ops is not None
        return der_to_raw(ops.sign(key, e))
    while True:  # gmssl returns None for the (negligible) r = 0, r + k = n or s = 0 cases
        k = secrets.randbelow(n - 1) + 1
        signature = key.sign(e, f"{k:064x}")
        if signature is not None:
            return bytes.fromhex(signature)


def _gmssl(private_hex: str, x: int, y: int) -> Any:
    from gmssl import sm2 as gm_sm2

    crypt = gm_sm2.CryptSM2(private_key=private_hex, public_key="")
    # Set after construction: CryptSM2.__init__ runs ``public_key.lstrip("04")`` on a key that
    # starts with "04", which also eats leading '0'/'4' digits of X (1 key in 256 breaks).
    crypt.public_key = f"{x:064x}{y:064x}"
    return crypt

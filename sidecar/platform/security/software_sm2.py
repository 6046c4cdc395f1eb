"""SM2 in software: a signer for tests and the simulator, and a host verifier.

:class:`SoftwareSm2` holds a private key in process memory. It is NOT for production keys: the
sidecar's own key lives in the HSM behind the :class:`~.signer.Sm2Signer` seam. It exists so
that tests and the platform simulator can sign like the real platform and the real HSM do.

:class:`HostSm2Verifier` needs only a public key (the platform's) and is fit for production.

Three implementations sit underneath (``backend``), chosen once per key:

``tongsuopy``
    Tongsuo's fork of pyca/cryptography, native SM2, through its public API. That API computes
    Z itself with the GM/T 0009 default user ID and offers no way to pass another, so it serves
    the default ID only.
``tongsuopy-e``
    For any other user ID: the host computes e = SM3(Z || M) (``sm2.py``) and Tongsuo signs or
    verifies e with ``EVP_PKEY_sign``/``EVP_PKEY_verify`` on the SM2 key. Those two functions
    are reached through tongsuopy's *private* cffi binding, so this path is used only after a
    self-test at first use passes: the GM/T 0003.5 vector must verify (and fail for another
    e), and a signature it makes must verify under the public path. If tongsuopy changes, the
    self-test fails and the next backend is used.
``gmssl``
    Pure Python, any user ID (the host computes e, gmssl does the curve arithmetic); the
    fallback when tongsuopy is not installed. The nonce k comes from ``secrets``: gmssl's own
    source is the non-cryptographic ``random`` module.

Measured on this 2-core machine, one thread, 200-byte messages, while other work kept the load
average at 1.5-3 (``python -m tests.unit.security.bench`` prints current figures; the
reference's quiet-machine figures for tongsuopy are 2,800 and 3,500):

==============================  ================  =================
backend                         signatures/s      verifications/s
==============================  ================  =================
tongsuopy (default user ID)     about 850-1,400   about 900-1,600
tongsuopy-e (any user ID)       about 850-1,400   about 950-1,500
gmssl (fallback, any user ID)   about 45-120      about 20-70
==============================  ================  =================

tongsuopy is therefore the implementation in use (1.0.1, abi3 wheel); without it everything
still works through gmssl, 10-40 times slower.
"""

from __future__ import annotations

import secrets
from functools import cache
from types import SimpleNamespace
from typing import Any, Literal

from sidecar.platform.security.encoding import RAW_SIGNATURE_LENGTH, der_to_raw, raw_to_der
from sidecar.platform.security.errors import KeyMaterialInvalid
from sidecar.platform.security.sm2 import (
    DEFAULT_USER_ID,
    GX,
    GY,
    N,
    Sm2PublicKey,
    check_user_id,
    compute_e,
    parse_private_scalar,
    private_scalar_from_base64,
)

BackendChoice = Literal["auto", "tongsuopy", "tongsuopy-e", "gmssl"]
Backend = Literal["tongsuopy", "tongsuopy-e", "gmssl"]

# GM/T 0003.5 Annex A, for the tongsuopy-e self-test
_VECTOR_KEY = (
    0x09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020,
    0xCCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13,
)
_VECTOR_E = bytes.fromhex("F0B43E94BA45ACCAACE692ED534382EB17E6AB5A19CE7B31F4486FDFC0D28640")
_VECTOR_RS = bytes.fromhex(
    "F5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3"
    "B1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA"
)


@cache
def _tongsuo() -> SimpleNamespace | None:
    """tongsuopy's modules, or None when it is not installed."""
    try:
        from tongsuopy.crypto import exceptions, hashes  # type: ignore[import-untyped]
        from tongsuopy.crypto.asymciphers import ec  # type: ignore[import-untyped]
    except ImportError:
        return None
    return SimpleNamespace(ec=ec, hashes=hashes, InvalidSignature=exceptions.InvalidSignature)


def tongsuopy_available() -> bool:
    return _tongsuo() is not None


class _TongsuoE:
    """SM2 sign/verify of a host-computed e through Tongsuo's EVP_PKEY_sign/verify."""

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
def _tongsuo_e() -> _TongsuoE | None:
    """The raw-e path, or None unless tongsuopy is there and the self-test passes."""
    ts = _tongsuo()
    if ts is None:
        return None
    try:
        from tongsuopy.backends.tongsuo.backend import (  # type: ignore[import-untyped]
            backend,
        )

        ops = _TongsuoE(backend)
        numbers = ts.ec.EllipticCurvePublicNumbers(*_VECTOR_KEY, ts.ec.SM2())
        vector_key = numbers.public_key()
        der = raw_to_der(_VECTOR_RS)
        if not ops.verify(vector_key, _VECTOR_E, der) or ops.verify(vector_key, bytes(32), der):
            return None
        private = ts.ec.generate_private_key(ts.ec.SM2())
        point = private.public_key().public_numbers()
        e = compute_e(Sm2PublicKey(point.x, point.y), DEFAULT_USER_ID, b"self-test")
        made = ops.sign(private, e)
        private.public_key().verify(made, b"self-test", ts.ec.ECDSA(ts.hashes.SM3()))
    except Exception:  # any change in tongsuopy's internals: fall back, never fail
        return None
    return ops


def _pick(choice: BackendChoice, user_id: bytes) -> Backend:
    if choice == "auto":
        if tongsuopy_available() and user_id == DEFAULT_USER_ID:
            return "tongsuopy"
        return "tongsuopy-e" if _tongsuo_e() is not None else "gmssl"
    usable = {
        "tongsuopy": tongsuopy_available() and user_id == DEFAULT_USER_ID,
        "tongsuopy-e": _tongsuo_e() is not None,
        "gmssl": True,
    }
    if not usable[choice]:
        raise KeyMaterialInvalid(
            "sm2 backend", f"{choice} is not installed or cannot use this user ID"
        )
    return choice


def _gmssl(private_hex: str, public_key: Sm2PublicKey) -> Any:
    from gmssl import sm2 as gm_sm2

    crypt = gm_sm2.CryptSM2(private_key=private_hex, public_key="")
    # Set after construction: CryptSM2.__init__ runs ``public_key.lstrip("04")`` on a key that
    # starts with "04", which also eats leading '0'/'4' digits of X (1 key in 256 breaks).
    crypt.public_key = public_key.to_bytes()[1:].hex()
    return crypt


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
        self.backend: Backend = _pick(backend, self.user_id)
        if self.backend == "gmssl":
            self._key: Any = _gmssl("", public_key)
        else:
            ts = _tongsuo()
            assert ts is not None
            numbers = ts.ec.EllipticCurvePublicNumbers(public_key.x, public_key.y, ts.ec.SM2())
            self._key = numbers.public_key()

    def verify(self, message: bytes, signature_rs: bytes) -> bool:
        if len(signature_rs) != RAW_SIGNATURE_LENGTH:
            return False
        r = int.from_bytes(signature_rs[:32], "big")
        s = int.from_bytes(signature_rs[32:], "big")
        if not (1 <= r < N and 1 <= s < N):
            return False
        if self.backend == "tongsuopy":
            ts = _tongsuo()
            assert ts is not None
            try:
                self._key.verify(raw_to_der(signature_rs), message, ts.ec.ECDSA(ts.hashes.SM3()))
            except ts.InvalidSignature:
                return False
            return True
        e = compute_e(self.public_key, self.user_id, message)
        if self.backend == "tongsuopy-e":
            ops = _tongsuo_e()
            assert ops is not None
            return ops.verify(self._key, e, raw_to_der(signature_rs))
        return bool(self._key.verify(signature_rs.hex(), e))


class SoftwareSm2:
    """An SM2 key pair in process memory. NOT FOR PRODUCTION KEYS: tests and the simulator only.

    Implements both :class:`~.signer.Sm2Signer` and :class:`~.signer.Sm2Verifier` (for its own
    public key) with one user ID.
    """

    def __init__(
        self,
        private_key: int | bytes,
        *,
        user_id: bytes = DEFAULT_USER_ID,
        backend: BackendChoice = "auto",
    ) -> None:
        d = parse_private_scalar(private_key) if isinstance(private_key, bytes) else private_key
        if not isinstance(d, int) or not 1 <= d <= N - 2:
            raise KeyMaterialInvalid("sm2 private key", "scalar out of range [1, n-2]")
        self._d = d
        self.user_id = check_user_id(user_id)
        self.backend: Backend = _pick(backend, self.user_id)
        self.public_key = _public_key(d)
        self._verifier = HostSm2Verifier(self.public_key, user_id=self.user_id, backend=backend)
        if self.backend == "gmssl":
            self._key: Any = _gmssl(f"{d:064x}", self.public_key)
        else:
            ts = _tongsuo()
            assert ts is not None
            self._key = ts.ec.derive_private_key(d, ts.ec.SM2())

    @classmethod
    def generate(
        cls, *, user_id: bytes = DEFAULT_USER_ID, backend: BackendChoice = "auto"
    ) -> SoftwareSm2:
        return cls(secrets.randbelow(N - 2) + 1, user_id=user_id, backend=backend)

    @classmethod
    def from_base64(
        cls, text: str, *, user_id: bytes = DEFAULT_USER_ID, backend: BackendChoice = "auto"
    ) -> SoftwareSm2:
        """From the platform's Base64 private key (32 bytes, or 33 with a leading 00)."""
        return cls(private_scalar_from_base64(text), user_id=user_id, backend=backend)

    def __repr__(self) -> str:
        # The user ID may be an appSecret (scheme B), so it is not shown either.
        size = len(self.user_id)
        return f"SoftwareSm2(backend={self.backend!r}, user_id=<{size} bytes>, key=<hidden>)"

    async def sign(self, message: bytes) -> bytes:
        return self.sign_now(message)

    def sign_now(self, message: bytes) -> bytes:
        """The synchronous signature, for code without an event loop (the simulator)."""
        if self.backend == "tongsuopy":
            ts = _tongsuo()
            assert ts is not None
            return der_to_raw(self._key.sign(message, ts.ec.ECDSA(ts.hashes.SM3())))
        e = compute_e(self.public_key, self.user_id, message)
        if self.backend == "tongsuopy-e":
            ops = _tongsuo_e()
            assert ops is not None
            return der_to_raw(ops.sign(self._key, e))
        while True:  # gmssl returns None for the (negligible) r = 0, r + k = n or s = 0 cases
            k = secrets.randbelow(N - 1) + 1
            signature = self._key.sign(e, f"{k:064x}")
            if signature is not None:
                return bytes.fromhex(signature)

    def verify(self, message: bytes, signature_rs: bytes) -> bool:
        return self._verifier.verify(message, signature_rs)


def _public_key(d: int) -> Sm2PublicKey:
    ts = _tongsuo()
    if ts is not None:
        numbers = ts.ec.derive_private_key(d, ts.ec.SM2()).public_key().public_numbers()
        return Sm2PublicKey(numbers.x, numbers.y)
    from gmssl import sm2 as gm_sm2

    point = gm_sm2.CryptSM2(private_key="", public_key="")._kg(d, f"{GX:064x}{GY:064x}")
    return Sm2PublicKey(int(point[:64], 16), int(point[64:], 16))

"""SM2 with a private key in process memory: a TEST DOUBLE, never product code.

The sidecar's own keys live in the HSM behind the ``Sm2Signer`` seam
(``sidecar.platform.security.signer``); :class:`SoftwareSm2` stands in for that signer in
tests, and for the platform's key where a test plays the platform. It signs on the backend the
SM crypto core picks (``hsm.sm.backend``: tongsuopy, tongsuopy-e for other user IDs, gmssl
without tongsuopy) and verifies with the core's :class:`~hsm.sm.sm2.HostSm2Verifier`, so a
signature it makes goes through exactly the verification the sidecar uses. Independent
checks of what it signs (OpenSSL, gmssl) are in ``tests/hsm/sm/test_sm2.py``.
"""

from __future__ import annotations

import secrets
from typing import Any

from hsm.sm import backend as native
from hsm.sm.backend import BackendChoice, Sm2Backend
from hsm.sm.errors import KeyMaterialInvalid
from hsm.sm.sm2 import (
    DEFAULT_USER_ID,
    GX,
    GY,
    HostSm2Verifier,
    N,
    Sm2PublicKey,
    check_user_id,
    choose_backend,
    compute_e,
    parse_private_scalar,
    private_scalar_from_base64,
)


def tongsuopy_available() -> bool:
    return native.tongsuopy() is not None


class SoftwareSm2:
    """An SM2 key pair in process memory. NOT FOR PRODUCTION KEYS: tests only.

    Implements both ``Sm2Signer`` and ``Sm2Verifier`` (for its own public key) with one user ID.
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
        self.backend: Sm2Backend = choose_backend(backend, self.user_id)
        self.public_key = Sm2PublicKey(*native.public_point(d, (GX, GY)))
        self._verifier = HostSm2Verifier(self.public_key, user_id=self.user_id, backend=backend)
        self._key: Any = native.private_key_object(
            self.backend, d, self.public_key.x, self.public_key.y
        )

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
        """The synchronous raw r || s signature, for code without an event loop."""
        if self.backend == "tongsuopy":
            return native.sign_message(self._key, message)
        e = compute_e(public_key=self.public_key, message=message, user_id=self.user_id)
        return native.sign_e(self.backend, self._key, e, N)

    def verify(self, message: bytes, signature_rs: bytes) -> bool:
        return self._verifier.verify(message, signature_rs)

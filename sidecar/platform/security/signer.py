"""The signing seam: who holds the SM2 private key is not this package's business.

In production the key lives in the HSM and the ``hsm`` package implements :class:`Sm2Signer`;
tests use a key in memory (``tests/software_sm2.py``). Both sides of the seam deal in raw
``r || s`` (64 bytes): the wire encoding (DER or raw, Base64) is the scheme's concern
(:mod:`hsm.sm.signature`), so a signer cannot get it wrong. The verifier of the platform's
signatures is the SM crypto core's :class:`~hsm.sm.sm2.HostSm2Verifier`.

The SM2 user ID enters Z (see :mod:`hsm.sm.sm2`) and so every signature; it is part of the
signer's and the verifier's configuration, set once where they are built, and the schemes
document which ID their peer expects.
"""

from __future__ import annotations

from typing import Protocol


class Sm2Signer(Protocol):
    async def sign(self, message: bytes) -> bytes:
        """Raw ``r || s`` (64 bytes) of SM3-with-SM2 over ``message`` with the configured user ID.

        Asynchronous because the real signer waits for an HSM session.
        """
        ...


class Sm2Verifier(Protocol):
    def verify(self, message: bytes, signature_rs: bytes) -> bool:
        """Whether ``signature_rs`` (raw r || s) is the peer's SM3-with-SM2 signature of
        ``message`` under the configured public key and user ID. Never raises for a bad
        signature, including one of the wrong length or with r or s out of range."""
        ...

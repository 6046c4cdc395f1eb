"""A sealed message waiting for its signature: sealing in two steps.

The signer seam is asynchronous (the HSM), but some callers have no event loop: the simulator's
request path is synchronous and signs with ``SoftwareSm2.sign_now``. So each scheme can
``prepare`` a message (everything but the signature, plus the exact bytes to sign) and
:meth:`PendingSeal.complete` it with a raw ``r || s`` from any signer. The schemes' async
``seal`` methods are just prepare, ``await signer.sign``, complete.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hsm.sm.signature import SignatureEncoding, b64encode, encode_signature


@dataclass(frozen=True)
class PendingSeal:
    """``body`` needs ``signature_field`` = Base64(signature of ``message``) to be complete."""

    message: bytes  # the exact bytes the signer must sign
    body: dict[str, Any]
    signature_field: str
    encoding: SignatureEncoding
    after: dict[str, Any] = field(default_factory=dict)  # fields that follow the signature

    def complete(self, signature_rs: bytes) -> dict[str, Any]:
        """The finished message, given the raw ``r || s`` signature of :attr:`message`."""
        encoded = encode_signature(signature_rs, self.encoding, field=self.signature_field)
        return {**self.body, self.signature_field: b64encode(encoded), **self.after}

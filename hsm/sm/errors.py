"""The SM core's errors: each names the field or key at fault and the rule that failed.

They are :class:`hsm.errors.HsmError` subclasses (so ``yibao-hsm`` maps them to its exit codes
and the ``hsm`` package's callers catch them as before) and also carry ``field`` and ``reason``,
which the protocol layer (``sidecar.platform.security``) reports per message field. Messages
never quote key material, plaintext, ciphertext or signatures: they end up in logs.
"""

from __future__ import annotations

from hsm.errors import ConfigError, HsmError, InvalidSignature, MalformedInput


class SmError(HsmError):
    """A value cannot be used by the SM core; ``field`` names the culprit."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class MalformedEncoding(SmError, MalformedInput):
    """Bytes or text that are not shaped as required (a signature, Base64, a point)."""


class KeyMaterialInvalid(SmError, ConfigError):
    """A key, user ID or IV cannot be used (wrong size, not on the curve, out of range)."""


class SignatureInvalid(SmError, InvalidSignature):
    """A signature is well formed but does not verify (wrong key, user ID, data or encoding)."""


class DecryptionFailed(SmError, InvalidSignature):
    """Ciphertext that does not decrypt: bad length, bad padding, or a failed GCM tag."""

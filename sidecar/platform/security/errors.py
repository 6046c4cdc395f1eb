"""One exception hierarchy for message security.

Callers need to tell four things apart: the peer's signature is wrong (``SignatureInvalid``),
absent (``SignatureMissing``), the ciphertext does not decrypt (``DecryptionFailed``), or the
message is not shaped like a secured message at all (``MalformedSecuredMessage``). Key material
that cannot be used is a configuration problem (``KeyMaterialInvalid``). All of them are
``SecurityError``, so "reject the message" is one ``except`` clause.

Messages name the field and the rule that failed. They never quote plaintext, ciphertext,
signatures or keys: these errors end up in logs, and the plaintext is health data.
"""

from __future__ import annotations


class SecurityError(Exception):
    """A secured message cannot be produced or accepted; ``field`` names the culprit."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class SignatureInvalid(SecurityError):
    """A signature is present but does not verify (wrong key, user ID, data or encoding)."""


class SignatureMissing(SecurityError):
    """The message carries no signature where one is required."""


class DecryptionFailed(SecurityError):
    """Ciphertext that does not decrypt: bad length, bad padding, or not the expected text."""


class MalformedSecuredMessage(SecurityError):
    """The message is not shaped as the scheme requires (a field missing or of the wrong type),
    or a value cannot be written canonically (a float amount, a non-string key)."""


class KeyMaterialInvalid(SecurityError):
    """A key, user ID or derivation input cannot be used (wrong size, not on the curve, ...)."""

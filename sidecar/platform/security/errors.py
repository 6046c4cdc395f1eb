"""One exception hierarchy for message security.

Callers need to tell four things apart: the peer's signature is wrong (``SignatureInvalid``),
absent (``SignatureMissing``), the ciphertext does not decrypt (``DecryptionFailed``), or the
message is not shaped like a secured message at all (``MalformedSecuredMessage``). Key material
that cannot be used is a configuration problem (``KeyMaterialInvalid``). All of them are
``SecurityError``, so "reject the message" is one ``except`` clause.

The SM crypto core (:mod:`hsm.sm`) raises the same classes (its codec and key checks are the
ones the schemes use), so they are the core's, named here as the protocol layer knows them;
only ``SignatureMissing`` is the schemes' own.

Messages name the field and the rule that failed. They never quote plaintext, ciphertext,
signatures or keys: these errors end up in logs, and the plaintext is health data.
"""

from __future__ import annotations

from hsm.sm.errors import DecryptionFailed as DecryptionFailed
from hsm.sm.errors import KeyMaterialInvalid as KeyMaterialInvalid
from hsm.sm.errors import MalformedEncoding as MalformedSecuredMessage
from hsm.sm.errors import SignatureInvalid as SignatureInvalid
from hsm.sm.errors import SmError as SecurityError

__all__ = [
    "DecryptionFailed",
    "KeyMaterialInvalid",
    "MalformedSecuredMessage",
    "SecurityError",
    "SignatureInvalid",
    "SignatureMissing",
]


class SignatureMissing(SecurityError):
    """The message carries no signature where one is required."""

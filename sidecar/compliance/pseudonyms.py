"""Keyed pseudonyms of data subjects: records can be found by person without storing the number.

The consent ledger (and the audit trail) store a person as ``Pseudonymizer.of(type, number)``, a
keyed hash of the certificate type and number. Without the key, a pseudonym cannot be turned back
into a number, nor can a number be tried against it (resident ID numbers are few enough to try
them all, so an unkeyed hash would not protect them).

In production the key stays in the HSM (an HMAC-SM3 key; the audit trail's implementation).
:class:`HostPseudonymizer` computes the same construction with a key held in memory, for tests and
development only.
"""

from __future__ import annotations

from typing import Protocol

from cryptography.hazmat.primitives import hashes, hmac

_SEPARATOR = b"\x1f"  # unit separator: no certificate type or number contains it
MIN_KEY_BYTES = 16


class Pseudonymizer(Protocol):
    def of(self, subject_id_type: str, subject_id: str) -> str:
        """The subject's pseudonym: lower-case hex, the same for the same type and number."""
        ...


class HostPseudonymizer:
    """HMAC-SM3 over ``type 0x1f number`` under a key in memory (tests and development)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"a pseudonym key needs at least {MIN_KEY_BYTES} bytes")
        self._key = key

    def __repr__(self) -> str:
        return "HostPseudonymizer(key=...)"

    def of(self, subject_id_type: str, subject_id: str) -> str:
        mac = hmac.HMAC(self._key, hashes.SM3())
        mac.update(subject_id_type.encode() + _SEPARATOR + subject_id.encode())
        return mac.finalize().hex()

"""Keyed digests of personal data: the one seam for every digest that is stored.

A person is stored as a pseudonym, ``PRF(key, "<certificate type>:<NUMBER>")``; an idempotency
key's payload (which holds the person's number, name, phone...) as
``PRF(key, "yibao-digest" 0x1f <domain> 0x1f <bytes>)``. Resident ID numbers are few enough to
try them all (a masked number leaves a birth date: tens of thousands of candidates), so an
unkeyed hash of anything that holds one gives the number back in a second; without the key
nobody can compute or test a candidate. The domain label keeps the uses apart (a settlement's
payload digest never equals an offsite one), and a subject message starts with a digit, so it
never collides with a digest message.

With ``[hsm]`` the PRF runs in the token (``sidecar.audit.hsm_keys.HsmPseudonyms``: the profile's
pseudonym function under the non-extractable ``pseudonym`` key), and the audit trail, the
consent ledger, settlements and offsite registrations share that one object, so a person's
pseudonym is the same in all of them. :class:`HostPrf` computes HMAC-SM3 with a key held in
memory, for tests and for development without an HSM only.
"""

from __future__ import annotations

import hmac as std_hmac
import secrets
from collections import OrderedDict
from typing import Final, Protocol

from hsm.sm.sm3 import hmac_sm3
from sidecar.domain.codes import CERTIFICATE_TYPE_CODES

MIN_KEY_BYTES = 16
_DIGEST_PREFIX: Final = b"yibao-digest\x1f"
_TYPE_OF_CODE: Final = {code: number for number, code in CERTIFICATE_TYPE_CODES.items()}
_CACHE_SIZE: Final = 4096

#: Domain labels of the digests at rest (one per use; docs/compliance.md).
SETTLEMENT_PAYLOAD: Final = "settlement-payload"
OFFSITE_PAYLOAD: Final = "offsite-payload"
CONSENT_PAYLOAD: Final = "consent-payload"


def subject_message(certificate_type: int, certificate_number: str) -> bytes:
    """The bytes a subject's pseudonym is computed over (the number trimmed, upper-case)."""
    return f"{certificate_type}:{certificate_number.strip().upper()}".encode()


class KeyedPrf(Protocol):
    """A keyed pseudorandom function whose key the caller never sees (hex output)."""

    key_label: str

    async def pseudonym(self, message: bytes) -> str: ...


class Pseudonymizer(Protocol):
    """What the consent ledger, settlements and offsite registrations store instead of data."""

    async def of(self, subject_id_type: str, subject_id: str) -> str:
        """The subject's pseudonym (certificate type *code*, e.g. ``01``, and number)."""
        ...

    async def digest(self, domain: str, data: bytes) -> str:
        """A keyed digest of ``data`` (which may hold personal data) for one ``domain``."""
        ...


class KeyedDigests:
    """:class:`Pseudonymizer` over a :class:`KeyedPrf`; remembers recent subjects' pseudonyms
    in memory, keyed by HMAC-SHA256 under a per-process random key (no number is held)."""

    def __init__(self, prf: KeyedPrf, cache_size: int = _CACHE_SIZE) -> None:
        self.prf = prf
        self._cache: OrderedDict[bytes, str] = OrderedDict()
        self._cache_key = secrets.token_bytes(32)
        self._cache_size = cache_size

    def __repr__(self) -> str:
        return f"KeyedDigests(key={self.prf.key_label!r})"

    @property
    def key_label(self) -> str:
        return self.prf.key_label

    async def of(self, subject_id_type: str, subject_id: str) -> str:
        certificate_type = _TYPE_OF_CODE.get(subject_id_type)
        if certificate_type is None:
            raise ValueError("unknown certificate type code")
        message = subject_message(certificate_type, subject_id)
        slot = std_hmac.digest(self._cache_key, message, "sha256")
        pseudonym = self._cache.get(slot)
        if pseudonym is None:
            pseudonym = await self.prf.pseudonym(message)
            self._cache[slot] = pseudonym
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(slot)
        return pseudonym

    async def digest(self, domain: str, data: bytes) -> str:
        if not domain or "\x1f" in domain:
            raise ValueError("a digest domain is a non-empty label without 0x1f")
        return await self.prf.pseudonym(_DIGEST_PREFIX + domain.encode() + b"\x1f" + data)


class HostPrf:
    """HMAC-SM3 under a key in memory (tests and development without ``[hsm]``)."""

    def __init__(self, key: bytes, key_label: str = "host") -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"a pseudonym key needs at least {MIN_KEY_BYTES} bytes")
        self._key = key
        self.key_label = key_label

    def __repr__(self) -> str:
        return f"HostPrf(key=..., key_label={self.key_label!r})"

    async def pseudonym(self, message: bytes) -> str:
        return hmac_sm3(self._key, message).hex()


class HostPseudonymizer(KeyedDigests):
    """:class:`KeyedDigests` over :class:`HostPrf` (tests and development only)."""

    def __init__(self, key: bytes) -> None:
        super().__init__(HostPrf(key))

    def __repr__(self) -> str:
        return "HostPseudonymizer(key=...)"

"""Sealed columns: personal data that a component must keep at rest, SM4-GCM encrypted.

``FieldSealer.seal(plaintext, context)`` returns a self-describing value (version 1)::

    b"YFS1" | len(wrapped) (2 bytes, big-endian) | wrapped data key
            | nonce (12) | SM4-GCM ciphertext | tag (16)

The data key is a random 16-byte SM4 key wrapped by a ``KeyWrapper``: the HSM's active KEK
(``hsm.datakeys.DataKeys``) in production, or a host-held key (``HostKeyWrapper``, development
only, see docs/compliance.md). The wrapped key travels inside every value, so a value opens with
nothing but the wrapper (no key table, old values keep working after a rotation); unwrapped keys
are cached in memory. The associated data is the header and ``context``, which names the row and
column the value belongs to (``context(...)``): a value copied to another row does not open.
"""

from __future__ import annotations

import logging
import secrets
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from hsm.sm import gcm as sm4gcm
from sidecar.store import StoreUnavailable

MAGIC = b"YFS1"
DATA_KEY_BYTES = 16
_HOST_WRAP_AAD = b"yibao-sidecar/fieldcrypt/host-wrapped-data-key/v1"

log = logging.getLogger(__name__)


class SealError(StoreUnavailable):
    """A value could not be sealed or opened (key wrapper down; value not ours, malformed,
    changed, or another row's). A ``StoreUnavailable``: the components fail closed on it
    (UNAVAILABLE / STORE_UNAVAILABLE), as on a store they cannot read."""


class KeyWrapper(Protocol):
    """Makes data keys and unwraps them (``hsm.datakeys.DataKeys`` is one)."""

    async def new(self) -> tuple[bytes, bytes]:
        """(data key, its wrapped form)."""
        ...

    async def unwrap(self, blob: bytes) -> bytes: ...


class HostKeyWrapper:
    """Development only: data keys wrapped (SM4-GCM) under a host-held 16-byte key."""

    def __init__(self, kek: bytes) -> None:
        if len(kek) != DATA_KEY_BYTES:
            raise ValueError("the host key-encryption key must be 16 bytes")
        self._kek = kek
        self._warned = False

    def __repr__(self) -> str:  # never print key material
        return "HostKeyWrapper()"

    async def new(self) -> tuple[bytes, bytes]:
        if not self._warned:  # once, when the first value is sealed
            self._warned = True
            log.warning("fieldcrypt.host_key_development_only")
        key = secrets.token_bytes(DATA_KEY_BYTES)
        return key, b"H" + sm4gcm.encrypt(self._kek, key, _HOST_WRAP_AAD)

    async def unwrap(self, blob: bytes) -> bytes:
        if blob[:1] != b"H":
            raise SealError("the data key was not wrapped by a host key")
        try:
            key = sm4gcm.decrypt(self._kek, blob[1:], _HOST_WRAP_AAD)
        except sm4gcm.PayloadError:
            raise SealError("the data key does not unwrap under this host key") from None
        if len(key) != DATA_KEY_BYTES:
            raise SealError("the wrapped data key has the wrong length")
        return key


def context(*parts: str) -> bytes:
    """Associated data naming where a value belongs, e.g. (table.column, tenant, request_id);
    each part length-prefixed so that no two different tuples give the same bytes."""
    out = bytearray()
    for part in parts:
        raw = part.encode("utf-8")
        out += struct.pack(">I", len(raw)) + raw
    return bytes(out)


@dataclass(frozen=True)
class _Current:
    key: bytes
    wrapped: bytes
    created: float

    def __repr__(self) -> str:  # never print key material
        return "_Current()"


class FieldSealer:
    """Seal and open column values; one data key per process, renewed after ``rotation_seconds``."""

    def __init__(
        self,
        wrapper: KeyWrapper,
        *,
        rotation_seconds: float = 86_400.0,
        cache_size: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._wrapper = wrapper
        self._rotation = rotation_seconds
        self._clock = clock
        self._cache_size = cache_size
        self._current: _Current | None = None
        self._unwrapped: dict[bytes, bytes] = {}

    async def seal(self, plaintext: bytes, context: bytes) -> bytes:
        current = await self._key()
        header = MAGIC + struct.pack(">H", len(current.wrapped)) + current.wrapped
        return header + sm4gcm.encrypt(current.key, plaintext, header + context)

    async def open(self, sealed: bytes, context: bytes) -> bytes:
        sealed = bytes(sealed)
        if len(sealed) < 6 or not sealed.startswith(MAGIC):
            raise SealError("not a sealed value (no YFS1 header)")
        (n,) = struct.unpack(">H", sealed[4:6])
        if len(sealed) < 6 + n + sm4gcm.NONCE_BYTES + sm4gcm.TAG_BYTES:
            raise SealError("sealed value is truncated")
        header, body = sealed[: 6 + n], sealed[6 + n :]
        key = await self._unwrap(sealed[6 : 6 + n])
        try:
            return sm4gcm.decrypt(key, body, header + context)
        except sm4gcm.PayloadError:
            raise SealError("sealed value failed its check (changed, or another row's)") from None

    async def _key(self) -> _Current:
        current = self._current
        if current is None or self._clock() - current.created >= self._rotation:
            try:
                key, wrapped = await self._wrapper.new()
            except Exception as exc:  # the HSM's errors carry no data; keep only their kind
                raise SealError(f"no data key: {type(exc).__name__}") from None
            current = self._current = _Current(key, wrapped, self._clock())
            self._remember(wrapped, key)
        return current

    async def _unwrap(self, wrapped: bytes) -> bytes:
        key = self._unwrapped.get(wrapped)
        if key is None:
            try:
                key = await self._wrapper.unwrap(wrapped)
            except SealError:
                raise
            except Exception as exc:
                raise SealError(f"data key did not unwrap: {type(exc).__name__}") from None
            self._remember(wrapped, key)
        return key

    def _remember(self, wrapped: bytes, key: bytes) -> None:
        if len(self._unwrapped) >= self._cache_size:
            self._unwrapped.pop(next(iter(self._unwrapped)))
        self._unwrapped[wrapped] = key

"""Payload encryption: SM4-GCM under data keys that the HSM's KEK wraps, rotated on a schedule.

The cipher itself is ``hsm.sm.gcm`` (shared with the sealed columns of
``sidecar.keys.fieldcrypt``).

Each payload is ``nonce (12) || ciphertext || tag (16)``; the associated data is the record's ID,
so a payload moved to another record does not decrypt. Data keys come from ``hsm.datakeys``
(a random 16-byte key, wrapped under the active KEK); the wrapped blob is stored in
``audit_data_keys`` *before* the first record that uses it, and every record names its key.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from hsm.sm.gcm import NONCE_BYTES, TAG_BYTES, PayloadError, decrypt, encrypt

__all__ = [
    "NONCE_BYTES",
    "TAG_BYTES",
    "DataKey",
    "DataKeyRing",
    "PayloadError",
    "decrypt",
    "encrypt",
]


@dataclass(frozen=True)
class DataKey:
    key_id: str
    key: bytes = b""
    created: float = 0.0

    def __repr__(self) -> str:  # never print key material
        return f"DataKey({self.key_id!r})"


NewKey = Callable[[], Awaitable[tuple[bytes, bytes]]]  # (data key, wrapped blob)
SaveKey = Callable[[str, bytes], Awaitable[None]]  # (key id, wrapped blob), durable


class DataKeyRing:
    """The current data key; a new one after ``rotation_seconds``, saved before it is used."""

    def __init__(
        self,
        new_key: NewKey,
        save_key: SaveKey,
        rotation_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._new_key = new_key
        self._save_key = save_key
        self._rotation = rotation_seconds
        self._clock = clock
        self._current: DataKey | None = None

    async def current(self) -> DataKey:
        key = self._current
        if key is None or self._clock() - key.created >= self._rotation:
            raw, blob = await self._new_key()
            fresh = DataKey(f"dk-{uuid.uuid4().hex}", raw, self._clock())
            try:
                await self._save_key(fresh.key_id, blob)
            except Exception:
                if key is None:
                    raise
                return key  # rotation waits until the store can keep the new key
            self._current = key = fresh
        return key

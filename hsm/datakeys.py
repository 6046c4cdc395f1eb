"""Data-key envelopes: random SM4 data keys wrapped under the token's active KEK.

Method: C_Encrypt/C_Decrypt of host random bytes with the KEK (SM4-CBC, random
IV), not C_WrapKey/C_UnwrapKey of an extractable session key object.  Why:

* the audit store needs the data key *on the host* (SM4-GCM, ``hsm.sm.gcm``),
  so a wrapped session object would have to be created extractable and
  non-sensitive and then read out anyway; the package's own
  policy refuses such keys, and nothing is gained;
* a KEK that may wrap must have CKA_WRAP, and a key with CKA_WRAP could export
  any extractable key of the token; our KEKs get CKA_ENCRYPT/CKA_DECRYPT only
  (CKA_WRAP = CKA_UNWRAP = false), so they can never move keys out;
* one PKCS#11 call per operation instead of generate + wrap + read + destroy.

Blob (version 1), all lengths fixed except the label::

    b"YDK1" | len(label) (1 byte) | KEK label, e.g. b"kek/2026-11" | IV (16)
            | SM4-CBC(KEK, IV, data key) (16) | HMAC-SM3(data key, all before) (32)

The KEK label (purpose/version) in the clear tells which KEK version wrapped
the key, so old blobs keep working after a rotation (the old KEK stays
``previous``: decrypt-only).  SM4-CBC has no integrity, so the blob carries an
HMAC keyed with the data key itself: only someone who can unwrap can forge it,
and any change to header, IV or ciphertext yields a different data key or a
different MAC input, so tampering is detected and refused.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pkcs11 import exceptions as p11e

from hsm.errors import InvalidSignature, MalformedInput, TokenError
from hsm.keys import KeyStore, parse_label
from hsm.sm.sm3 import hmac_sm3

if TYPE_CHECKING:
    from hsm.token import HsmToken, WorkerSession

MAGIC = b"YDK1"
DATA_KEY_BYTES = 16
_IV = 16
_MAC = 32


class TamperedBlob(InvalidSignature):
    """The data-key blob failed its integrity check."""


@dataclass(frozen=True)
class DataKeyBlob:
    """The parsed parts of a wrapped data key."""

    kek_label: str
    iv: bytes
    ciphertext: bytes
    mac: bytes

    @property
    def header(self) -> bytes:
        label = self.kek_label.encode("ascii")
        return MAGIC + bytes([len(label)]) + label + self.iv + self.ciphertext

    def encode(self) -> bytes:
        return self.header + self.mac

    @classmethod
    def parse(cls, blob: bytes) -> DataKeyBlob:
        if len(blob) < 5 or not blob.startswith(MAGIC):
            raise MalformedInput("data-key blob does not start with YDK1")
        n = blob[4]
        expected = 5 + n + _IV + DATA_KEY_BYTES + _MAC
        if len(blob) != expected:
            raise MalformedInput(f"data-key blob must be {expected} bytes, got {len(blob)}")
        try:
            label = blob[5 : 5 + n].decode("ascii")
        except UnicodeDecodeError:
            raise MalformedInput("data-key blob KEK label is not ASCII") from None
        parse_label(label)
        off = 5 + n
        return cls(
            kek_label=label,
            iv=blob[off : off + _IV],
            ciphertext=blob[off + _IV : off + _IV + DATA_KEY_BYTES],
            mac=blob[off + _IV + DATA_KEY_BYTES :],
        )


def _mac(data_key: bytes, header: bytes) -> bytes:
    return hmac_sm3(data_key, header)


class DataKeys:
    """Generate and unwrap data keys with the token's KEKs."""

    def __init__(self, token: HsmToken, keys: KeyStore | None = None) -> None:
        self.token = token
        self.keys = keys or KeyStore(token)
        self._mech = token.mechs.mech("sm4_cbc")
        self._active: str | None = None
        self._checked: set[str] = set()

    def active_kek(self) -> str:
        """Label of the active KEK (checked non-exportable once, then cached)."""
        if self._active is None:
            self._active = self.keys.active("kek").label
            self._checked.add(self._active)
        return self._active

    def refresh(self) -> None:
        """Forget cached KEK state (call after a rotation)."""
        self._active = None
        self._checked.clear()

    def _kek(self, ws: WorkerSession, label: str) -> Any:
        key = ws.cache.get(("kek", label))
        if key is None:
            from pkcs11 import Attribute, ObjectClass

            objs = list(
                ws.p11.get_objects(
                    {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: label}
                )
            )
            if not objs:
                raise TokenError(f"KEK {label} not found on the token")
            key = objs[0]
            ws.cache[("kek", label)] = key
        return key

    # ------------------------------------------------------------------ operations
    def wrap_op(self, data_key: bytes, kek_label: str) -> Callable[[WorkerSession], bytes]:
        iv = secrets.token_bytes(_IV)

        def op(ws: WorkerSession) -> bytes:
            ct = self._kek(ws, kek_label).encrypt(
                data_key, mechanism=self._mech, mechanism_param=iv
            )
            partial = DataKeyBlob(kek_label, iv, bytes(ct), b"")
            return DataKeyBlob(kek_label, iv, bytes(ct), _mac(data_key, partial.header)).encode()

        return op

    def unwrap_op(self, blob: DataKeyBlob) -> Callable[[WorkerSession], bytes]:
        def op(ws: WorkerSession) -> bytes:
            dk = bytes(
                self._kek(ws, blob.kek_label).decrypt(
                    blob.ciphertext, mechanism=self._mech, mechanism_param=blob.iv
                )
            )
            if not hmac.compare_digest(_mac(dk, blob.header), blob.mac):
                raise TamperedBlob(
                    f"data-key blob for {blob.kek_label} failed its integrity check (tampered)"
                )
            return dk

        return op

    def _usable(self, label: str) -> None:
        if label not in self._checked:
            self.keys.usable(label)
            self._checked.add(label)

    # ------------------------------------------------------------------ async API
    async def new(self) -> tuple[bytes, bytes]:
        """(data key, blob): a fresh 16-byte SM4 key and its wrapped form."""
        dk = secrets.token_bytes(DATA_KEY_BYTES)
        return dk, await self._run(self.wrap_op(dk, self.active_kek()))

    async def unwrap(self, blob: bytes) -> bytes:
        parsed = DataKeyBlob.parse(blob)
        self._usable(parsed.kek_label)
        return await self._run(self.unwrap_op(parsed))

    async def _run(self, fn: Callable[[WorkerSession], bytes]) -> bytes:
        try:
            return await self.token.run(fn)
        except p11e.PKCS11Error as exc:
            raise TokenError(f"data-key operation failed: {type(exc).__name__}") from None

    # ------------------------------------------------------------------ blocking API
    def new_blocking(self) -> tuple[bytes, bytes]:
        dk = secrets.token_bytes(DATA_KEY_BYTES)
        return dk, self._call(self.wrap_op(dk, self.active_kek()))

    def unwrap_blocking(self, blob: bytes) -> bytes:
        parsed = DataKeyBlob.parse(blob)
        self._usable(parsed.kek_label)
        return self._call(self.unwrap_op(parsed))

    def _call(self, fn: Callable[[WorkerSession], bytes]) -> bytes:
        try:
            return self.token.call(fn)
        except p11e.PKCS11Error as exc:
            raise TokenError(f"data-key operation failed: {type(exc).__name__}") from None

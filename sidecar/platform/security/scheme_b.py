"""Scheme B: the mobile-payment body signature (医保移动支付, version 2.0.1).

A request body is ``{appId, encType: "SM4", signType: "SM2", timestamp, version, encData,
signData[, extra]}``; answers have the same shape plus the platform's own fields (``code``,
``message``, ...). The business data never travels in clear:

* data key: SM4-ECB-PKCS7 of the appSecret (UTF-8) under the first 16 characters of the appId
  (UTF-8, so the appId must start with 16 ASCII characters); upper-case hex of that; its first
  16 characters, as UTF-8 bytes, are the key (:func:`derive_data_key`);
* ``encData``: upper-case hex of SM4-ECB-PKCS7 of the data's JSON bytes (``json_text.dumps``:
  compact, UTF-8, keys in the order given, Decimals exact). Lower-case hex is accepted on input;
* ``signData``: Base64 of the raw ``r || s`` SM3-with-SM2 signature of the UTF-8 string to
  sign (``canonical.string_to_sign``), which includes ``data`` in clear and the appSecret.

The SM2 user ID is configuration (:class:`SchemeBConfig`): the GM/T 0009 default
``1234567812345678`` unless the deployment uses the appSecret (one official-looking demo
does). The signer and the platform verifier must be built with :meth:`SchemeBConfig.sm2_user_id`.

Opening checks, in order: the body is an object; ``signData`` is present (SignatureMissing);
``encType``/``signType``, when present, name SM4/SM2; ``encData`` decrypts to JSON
(DecryptionFailed, which also covers altered ciphertext); the signature verifies over the
answer's string to sign (SignatureInvalid). Nothing is returned unless all pass.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hsm.sm import sm4
from hsm.sm.signature import (
    SignatureEncoding,
    b64decode,
    decode_signature,
)
from hsm.sm.sm2 import DEFAULT_USER_ID, check_user_id
from sidecar.platform.security.canonical import CanonicalConfig, string_to_sign
from sidecar.platform.security.errors import (
    DecryptionFailed,
    KeyMaterialInvalid,
    MalformedSecuredMessage,
    SecurityError,
    SignatureInvalid,
    SignatureMissing,
)
from sidecar.platform.security.json_text import dumps, loads
from sidecar.platform.security.pending import PendingSeal
from sidecar.platform.security.signer import Sm2Signer, Sm2Verifier

ENC_TYPE = "SM4"
SIGN_TYPE = "SM2"
DEFAULT_VERSION = "2.0.1"
# Fields the scheme writes itself; a caller's extra fields may not override them.
_RESERVED = frozenset(
    {"appId", "encType", "signType", "timestamp", "version", "encData", "signData", "extra", "data"}
)
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})+")


def derive_data_key(app_id: str, app_secret: str) -> bytes:
    """The SM4 data key: the first 16 characters of upper-hex(SM4-ECB-PKCS7(appSecret))
    under the key appId[:16], as UTF-8 bytes."""
    seed = app_id[:16].encode("utf-8")
    if len(seed) != sm4.KEY_SIZE:
        raise KeyMaterialInvalid("appId", "must start with 16 ASCII characters")
    if not app_secret:
        raise KeyMaterialInvalid("appSecret", "must not be empty")
    return sm4.encrypt_ecb(seed, app_secret.encode("utf-8")).hex().upper()[:16].encode("ascii")


@dataclass(frozen=True)
class SchemeBConfig:
    """One application's scheme-B settings. ``app_secret`` is a secret: kept out of repr."""

    app_id: str
    app_secret: str = field(repr=False)
    version: str = DEFAULT_VERSION
    user_id: bytes = DEFAULT_USER_ID
    user_id_from_app_secret: bool = False  # use the appSecret (UTF-8) as the SM2 user ID
    signature_encoding: SignatureEncoding = SignatureEncoding.RAW  # inside signData's Base64
    canonical: CanonicalConfig = field(default_factory=CanonicalConfig)

    def __post_init__(self) -> None:
        if self.user_id_from_app_secret and self.user_id != DEFAULT_USER_ID:
            raise KeyMaterialInvalid("sm2 user id", "set user_id or user_id_from_app_secret")
        check_user_id(self.sm2_user_id())
        derive_data_key(self.app_id, self.app_secret)  # fail at start-up, not per message

    def sm2_user_id(self) -> bytes:
        """The SM2 user ID both sides sign with; build the signer and verifier with it."""
        return self.app_secret.encode("utf-8") if self.user_id_from_app_secret else self.user_id

    def data_key(self) -> bytes:
        return derive_data_key(self.app_id, self.app_secret)


@dataclass(frozen=True)
class OpenedMessage:
    """A verified, decrypted body: its clear fields, the business data, and ``extra``."""

    fields: dict[str, Any]
    data: Any
    extra: Any = None


def _now_ms() -> str:
    return str(time.time_ns() // 1_000_000)


class SchemeB:
    """Seals bodies with our signer and opens bodies signed by the peer."""

    def __init__(
        self,
        config: SchemeBConfig,
        signer: Sm2Signer,
        peer: Sm2Verifier,
        *,
        clock: Callable[[], str] = _now_ms,
    ) -> None:
        self._config = config
        self._signer = signer
        self._peer = peer
        self._clock = clock
        self._key = config.data_key()

    async def seal(
        self,
        data: Any,
        *,
        extra: Any = None,
        fields: Mapping[str, Any] | None = None,
        timestamp: str | None = None,
    ) -> dict[str, Any]:
        """The body carrying ``data``. ``fields`` adds clear, signed fields (an answer's
        ``code`` and ``message`` when the simulator seals one); ``extra`` is sent unsigned."""
        pending = self.prepare(data, extra=extra, fields=fields, timestamp=timestamp)
        return pending.complete(await self._signer.sign(pending.message))

    def prepare(
        self,
        data: Any,
        *,
        extra: Any = None,
        fields: Mapping[str, Any] | None = None,
        timestamp: str | None = None,
    ) -> PendingSeal:
        """The body without ``signData``; for callers without an event loop: sign
        ``.message`` (the UTF-8 string to sign) and call ``.complete``."""
        config = self._config
        clash = _RESERVED.intersection(fields or {})
        if clash:
            raise ValueError(f"fields may not set {sorted(clash)}")
        body: dict[str, Any] = {
            "appId": config.app_id,
            "encType": ENC_TYPE,
            "signType": SIGN_TYPE,
            "timestamp": timestamp if timestamp is not None else self._clock(),
            "version": config.version,
            **(fields or {}),
        }
        text = string_to_sign({**body, "data": data}, config.app_secret, config.canonical)
        body["encData"] = sm4.encrypt_ecb(self._key, dumps(data)).hex().upper()
        after = {"extra": extra} if extra is not None else {}
        encoding = config.signature_encoding
        return PendingSeal(text.encode("utf-8"), body, "signData", encoding, after)

    def open(self, body: Any) -> OpenedMessage:
        """Verify and decrypt a body; only SecurityError subclasses escape."""
        try:
            return self._open(body)
        except SecurityError:
            raise
        except (TypeError, ValueError, RecursionError):
            # A value no check above anticipated; refuse it rather than crash.
            raise MalformedSecuredMessage("body", "cannot be read as a scheme-B body") from None

    def _open(self, body: Any) -> OpenedMessage:
        config = self._config
        if not isinstance(body, Mapping):
            raise MalformedSecuredMessage("body", "is not a JSON object")
        sign_data = body.get("signData")
        if sign_data is None or sign_data == "":
            raise SignatureMissing("signData", "is missing")
        _expect(body, "encType", ENC_TYPE)
        _expect(body, "signType", SIGN_TYPE)
        if body.get("data") not in (None, ""):
            raise MalformedSecuredMessage("data", "business data must travel as encData")
        data = self._decrypt(body.get("encData"))
        unsigned = ("encData", "signData", "extra", "data")  # a null/"" data is dropped anyway
        signed = {k: v for k, v in body.items() if k not in unsigned}
        text = string_to_sign({**signed, "data": data}, config.app_secret, config.canonical)
        raw = b64decode(sign_data, field="signData")
        signature = decode_signature(raw, config.signature_encoding, field="signData")
        if not self._peer.verify(text.encode("utf-8"), signature):
            raise SignatureInvalid("signData", "does not verify over the body")
        return OpenedMessage(fields=signed, data=data, extra=body.get("extra"))

    def _decrypt(self, enc_data: Any) -> Any:
        if enc_data is None or enc_data == "":
            return None  # no business data (some refusals); the signature still covers the rest
        if not isinstance(enc_data, str) or not _HEX.fullmatch(enc_data):
            raise MalformedSecuredMessage("encData", "is not hexadecimal text")
        plaintext = sm4.decrypt_ecb(self._key, bytes.fromhex(enc_data), field="encData")
        return loads(plaintext, field="encData", error=DecryptionFailed)


def _expect(body: Mapping[str, Any], name: str, value: str) -> None:
    if name in body and body[name] != value:
        raise MalformedSecuredMessage(name, f"must be {value!r}")

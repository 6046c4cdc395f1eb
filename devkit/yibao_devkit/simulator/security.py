"""The message-security step of the request path: plain JSON, or SM2/SM4 schemes A and B.

The app's request path is: decode the body -> :meth:`MessageSecurity.open` (verify the sender's
signature, decrypt ``input``) -> check and dispatch -> :meth:`MessageSecurity.seal` (encrypt
``output``, sign) -> encode. Three implementations:

* :class:`PlainText` (the default): requests and answers travel as plain JSON;
* :class:`SchemeAPlatform`: the provincial gateways' envelope signature (platform-protocol.md
  §5 A): ``input``/``output`` carry Base64 of SM4-ECB-PKCS7 of the JSON, ``cainfo`` the Base64
  raw ``r || s`` SM3-with-SM2 signature over those plain JSON bytes, ``encType`` ``SM4``,
  ``signtype`` ``SM2``. A refusal's ``output`` is JSON ``null``, encrypted and signed like any
  other output (the answer is always signed);
* :class:`SchemeBPlatform`: mobile payment 2.0.1 (§5 B): the body is ``{appId, encType,
  signType, timestamp, version, encData, signData}``; the business data (``encData``, and
  ``data`` in the string to sign) is **the whole request or response envelope**.

The crypto is the simulator's own (:mod:`~yibao_devkit.simulator.crypto`,
:mod:`~yibao_devkit.simulator.signing_text`), never the sidecar's: every test is a check between two
independent implementations.

A request that does not decrypt, whose signature is missing or wrong, or that comes from an
unknown appId is refused with the one text :data:`SECURITY_CHECK_FAILED`, whatever the cause, so
that the simulator is no padding oracle.

:meth:`MessageSecurity.corrupt_signature` serves the ``bad-signature`` fault: it must turn a
sealed answer into one whose signature a correct client rejects. Every scheme implements it for
its own signature field. :meth:`MessageSecurity.routing_infno` tells the fault switches and the
call counter which transaction a body is before it is verified (scheme B hides ``infno`` inside
``encData``).
"""

from __future__ import annotations

import base64
import binascii
import decimal
import json
import re
import time
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, Final, Protocol

from yibao_devkit.simulator import errors
from yibao_devkit.simulator.crypto import (
    DEFAULT_USER_ID,
    BackendChoice,
    CryptoError,
    PrivateKey,
    PublicKey,
    Signer,
    Verifier,
    sm4_ecb_decrypt,
    sm4_ecb_encrypt,
)
from yibao_devkit.simulator.signing_text import string_to_sign
from yibao_devkit.simulator.wire import JsonObject, dumps

# Looks like a Base64 signature of the right size but verifies against nothing.
CORRUPT_SIGNATURE: Final = "QkFEU0lHTkFUVVJF" * 5 + "AAAAAAAA"
# One answer for every failure to decrypt or verify a request (no padding oracle).
SECURITY_CHECK_FAILED: Final = "报文验签失败，请检查签名及加密密钥"
ENC_TYPE: Final = "SM4"
SIGN_TYPE: Final = "SM2"
SCHEME_B_VERSION: Final = "2.0.1"
_HEX: Final = re.compile(r"(?:[0-9A-Fa-f]{2})+")


class MessageSecurity(Protocol):
    def open(self, body: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        """The request with ``input`` in clear, after checking the sender's signature.

        Raises :class:`~yibao_devkit.simulator.errors.Refusal` when the request cannot be trusted.
        """
        ...

    def seal(self, answer: JsonObject) -> JsonObject:
        """The answer as it travels: ``output`` encrypted and the envelope signed, if required."""
        ...

    def corrupt_signature(self, answer: JsonObject) -> JsonObject:
        """``answer`` (as sealed) with a signature that does not verify."""
        ...

    def routing_infno(self, body: Mapping[str, Any]) -> str | None:
        """The ``infno`` of a body as received (unverified), for fault switches and counting."""
        ...


class PlainText:
    """No message security: requests and answers travel as plain JSON, as in most test setups."""

    def open(self, body: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        return body

    def seal(self, answer: JsonObject) -> JsonObject:
        return answer

    def corrupt_signature(self, answer: JsonObject) -> JsonObject:
        corrupted: dict[str, Any] = dict(answer)
        corrupted["cainfo"] = CORRUPT_SIGNATURE
        corrupted["signtype"] = "SM2"
        if "signData" in corrupted:
            corrupted["signData"] = CORRUPT_SIGNATURE
        return corrupted

    def routing_infno(self, body: Mapping[str, Any]) -> str | None:
        infno = body.get("infno")
        return infno if isinstance(infno, str) else None


class SchemeAPlatform:
    """Scheme A, the platform's side: opens signed requests, seals signed answers.

    ``sm4_key`` (16 bytes) encrypts ``input`` and ``output``; ``client_public_key`` checks the
    institution's ``cainfo``; ``platform_key`` (generated when omitted) signs the answers. Both
    signatures use ``user_id`` (GM/T 0009 default unless configured). What is signed is exactly
    the plain JSON bytes that were encrypted; a refusal's output is ``null``: the bytes
    ``null`` are encrypted into ``output`` and signed.
    """

    def __init__(
        self,
        sm4_key: bytes,
        client_public_key: PublicKey,
        platform_key: PrivateKey | None = None,
        *,
        user_id: bytes = DEFAULT_USER_ID,
        backend: BackendChoice = "auto",
    ) -> None:
        if len(sm4_key) != 16:
            raise CryptoError("the scheme-A SM4 key is 16 bytes")
        self._key = bytes(sm4_key)
        self.platform_key = platform_key if platform_key is not None else PrivateKey.generate()
        self.user_id = bytes(user_id)
        self._signer = Signer(self.platform_key, user_id=self.user_id, backend=backend)
        self._client = Verifier(client_public_key, user_id=self.user_id, backend=backend)

    @property
    def platform_public_key(self) -> PublicKey:
        return self.platform_key.public_key

    def open(self, body: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if body.get("encType") != ENC_TYPE:
            raise errors.Refusal(errors.FIELD_BAD_VALUE.format(field="encType"))
        if body.get("signtype") not in (SIGN_TYPE, None, ""):
            raise errors.Refusal(errors.FIELD_BAD_VALUE.format(field="signtype"))
        try:
            plaintext = sm4_ecb_decrypt(self._key, _base64(body.get("input")))
            signature = _base64(body.get("cainfo"))
        except (CryptoError, ValueError):
            raise errors.Refusal(SECURITY_CHECK_FAILED) from None
        if not self._client.verify(plaintext, signature):
            raise errors.Refusal(SECURITY_CHECK_FAILED)
        opened = dict(body)
        opened["input"] = _json_or_refuse(plaintext, errors.INPUT_NOT_OBJECT)
        return opened

    def seal(self, answer: JsonObject) -> JsonObject:
        plaintext = dumps(answer.get("output")).encode("utf-8")
        sealed: dict[str, Any] = dict(answer)
        sealed["output"] = base64.b64encode(sm4_ecb_encrypt(self._key, plaintext)).decode()
        sealed["cainfo"] = base64.b64encode(self._signer.sign(plaintext)).decode()
        sealed["signtype"] = SIGN_TYPE
        sealed["encType"] = ENC_TYPE
        return sealed

    def corrupt_signature(self, answer: JsonObject) -> JsonObject:
        return _corrupted(answer, "cainfo")

    def routing_infno(self, body: Mapping[str, Any]) -> str | None:
        infno = body.get("infno")
        return infno if isinstance(infno, str) else None


def derive_data_key(app_id: str, app_secret: str) -> bytes:
    """Scheme B's SM4 data key: upper-hex(SM4-ECB-PKCS7(appSecret) under appId[:16])[:16]."""
    seed = app_id[:16].encode("utf-8")
    if len(seed) != 16 or not app_secret:
        raise CryptoError("scheme B needs an appId of 16+ ASCII characters and an appSecret")
    return sm4_ecb_encrypt(seed, app_secret.encode("utf-8")).hex().upper()[:16].encode("ascii")


class SchemeBPlatform:
    """Scheme B (mobile payment 2.0.1), the platform's side.

    The business data of a request is the whole request envelope, of an answer the whole
    response envelope: ``encData`` is upper-case hex of SM4-ECB-PKCS7 of its JSON under the data
    key (:func:`derive_data_key`), and ``data`` in the string to sign is that envelope. Answers
    carry ``appId``, ``encType``, ``signType``, ``timestamp`` (13-digit ms), ``version``,
    ``encData`` and ``signData``. The SM2 user ID is ``user_id`` (default
    ``1234567812345678``), or the appSecret's UTF-8 bytes with ``user_id_from_app_secret``.
    """

    def __init__(
        self,
        app_id: str,
        app_secret: str,
        client_public_key: PublicKey,
        platform_key: PrivateKey | None = None,
        *,
        user_id: bytes = DEFAULT_USER_ID,
        user_id_from_app_secret: bool = False,
        version: str = SCHEME_B_VERSION,
        clock: Callable[[], str] | None = None,
        backend: BackendChoice = "auto",
    ) -> None:
        self.app_id = app_id
        self._secret = app_secret
        self._key = derive_data_key(app_id, app_secret)
        self.version = version
        self.user_id = app_secret.encode("utf-8") if user_id_from_app_secret else bytes(user_id)
        self.platform_key = platform_key if platform_key is not None else PrivateKey.generate()
        self._signer = Signer(self.platform_key, user_id=self.user_id, backend=backend)
        self._client = Verifier(client_public_key, user_id=self.user_id, backend=backend)
        self._clock = clock if clock is not None else _millis

    def __repr__(self) -> str:
        return f"SchemeBPlatform(app_id={self.app_id!r}, app_secret=<hidden>)"

    @property
    def platform_public_key(self) -> PublicKey:
        return self.platform_key.public_key

    def open(self, body: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for name, expected in (("encType", ENC_TYPE), ("signType", SIGN_TYPE)):
            if body.get(name) != expected:
                raise errors.Refusal(errors.FIELD_BAD_VALUE.format(field=name))
        if body.get("appId") != self.app_id:
            raise errors.Refusal(SECURITY_CHECK_FAILED)
        try:
            data = self._decrypt(body.get("encData"))
            signature = _base64(body.get("signData"))
            fields = {k: v for k, v in body.items() if k not in ("encData", "signData", "extra")}
            text = string_to_sign({**fields, "data": data}, self._secret)
        except (CryptoError, ValueError, TypeError):
            raise errors.Refusal(SECURITY_CHECK_FAILED) from None
        if not self._client.verify(text.encode("utf-8"), signature):
            raise errors.Refusal(SECURITY_CHECK_FAILED)
        if not isinstance(data, dict):
            raise errors.Refusal(errors.MALFORMED_BODY)
        return data

    def seal(self, answer: JsonObject) -> JsonObject:
        body: dict[str, Any] = {
            "appId": self.app_id,
            "encType": ENC_TYPE,
            "signType": SIGN_TYPE,
            "timestamp": self._clock(),
            "version": self.version,
        }
        text = string_to_sign({**body, "data": answer}, self._secret)
        plaintext = dumps(answer).encode("utf-8")
        body["encData"] = sm4_ecb_encrypt(self._key, plaintext).hex().upper()
        body["signData"] = base64.b64encode(self._signer.sign(text.encode("utf-8"))).decode()
        return body

    def corrupt_signature(self, answer: JsonObject) -> JsonObject:
        return _corrupted(answer, "signData")

    def routing_infno(self, body: Mapping[str, Any]) -> str | None:
        try:
            data = self._decrypt(body.get("encData"))
        except (CryptoError, ValueError):
            return None
        infno = data.get("infno") if isinstance(data, dict) else None
        return infno if isinstance(infno, str) else None

    def _decrypt(self, enc_data: Any) -> Any:
        if not isinstance(enc_data, str) or not _HEX.fullmatch(enc_data):
            raise CryptoError("encData is not hexadecimal")
        return _json(sm4_ecb_decrypt(self._key, bytes.fromhex(enc_data)))


def _millis() -> str:
    return str(time.time_ns() // 1_000_000)


def _base64(value: Any) -> bytes:
    if not isinstance(value, str) or not value:
        raise ValueError("not Base64 text")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError("not Base64 text") from None


def _json(data: bytes) -> Any:
    """Strict JSON: UTF-8, exact decimals, no NaN, no duplicate keys; ValueError otherwise."""

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result = dict(pairs)
        if len(result) != len(pairs):
            raise ValueError("duplicate key")
        return result

    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        return json.loads(
            data.decode("utf-8"),
            parse_float=decimal.Decimal,
            parse_constant=no_constant,
            object_pairs_hook=unique,
        )
    except (UnicodeDecodeError, RecursionError):
        raise ValueError("not JSON") from None


def _json_or_refuse(data: bytes, err_msg: str) -> Any:
    try:
        return _json(data)
    except ValueError:
        raise errors.Refusal(err_msg) from None


def _corrupted(answer: JsonObject, field: str) -> JsonObject:
    """``answer`` with one bit of the signature in ``field`` flipped (a well-formed forgery)."""
    corrupted: dict[str, Any] = dict(answer)
    try:
        raw = bytearray(_base64(corrupted.get(field)))
    except ValueError:
        corrupted[field] = CORRUPT_SIGNATURE
        return corrupted
    raw[-1] ^= 0x01
    corrupted[field] = base64.b64encode(bytes(raw)).decode("ascii")
    return corrupted

"""Page tokens: opaque to callers, tamper-evident, and bound to the query that produced them.

A token carries a small position (a few named integers or short strings, e.g. an anchor and an
offset) and a MAC. The MAC covers the position and a *binding*: a digest of everything the
token is only valid with (the RPC, the tenant, the request without ``page_token`` and
``page_size``). The binding itself is not in the token, so a token reveals nothing about the
data subject; presenting it with another subject, tenant or filter fails the MAC check exactly
like a forged token does.

Wire format (URL-safe Base64 without padding)::

    version (1 byte: 1) | issued (4 bytes: epoch seconds, big-endian) | position JSON | mac (16)

``mac = HMAC-SHA256(key, version | issued | sha256(binding) | position JSON)[:16]``. Tokens older
than ``max_age`` are refused, so a position cannot be replayed forever.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import struct
import time
from collections.abc import Callable, Mapping

from google.protobuf.message import Message

VERSION = 1
MAC_BYTES = 16
MAX_TOKEN_CHARS = 512
_HEADER = struct.Struct(">BI")

Position = Mapping[str, int | str]


class BadPageToken(ValueError):
    """The token is malformed, forged, expired, or belongs to another query."""


class PageTokens:
    """Issues and opens page tokens under one secret key."""

    def __init__(
        self, key: bytes, *, max_age: float = 3600.0, clock: Callable[[], float] = time.time
    ) -> None:
        if len(key) < 16:
            raise ValueError("the page-token key needs at least 16 bytes")
        self._key = key
        self._max_age = max_age
        self._clock = clock

    def issue(self, binding: bytes, position: Position) -> str:
        """A token for ``position`` that only opens with the same ``binding``."""
        body = json.dumps(dict(position), sort_keys=True, separators=(",", ":")).encode()
        header = _HEADER.pack(VERSION, int(self._clock()) & 0xFFFFFFFF)
        raw = header + body + self._mac(header, binding, body)
        token = base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
        if len(token) > MAX_TOKEN_CHARS:
            raise ValueError("position too large for a page token")
        return token

    def open(self, token: str, binding: bytes) -> dict[str, int | str]:
        """The position in ``token``; ``BadPageToken`` unless it is ours, fresh and bound here."""
        if not token or len(token) > MAX_TOKEN_CHARS or not token.isascii():
            raise BadPageToken("malformed")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise BadPageToken("malformed") from None
        if len(raw) < _HEADER.size + MAC_BYTES + 2:
            raise BadPageToken("malformed")
        header, body, mac = raw[: _HEADER.size], raw[_HEADER.size : -MAC_BYTES], raw[-MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(header, binding, body)):
            raise BadPageToken("not valid for this request")
        version, issued = _HEADER.unpack(header)
        if version != VERSION:
            raise BadPageToken("unknown version")
        age = int(self._clock()) - issued
        if age < -300 or age > self._max_age:
            raise BadPageToken("expired")
        try:
            position = json.loads(body)
        except ValueError:
            raise BadPageToken("malformed") from None
        if not isinstance(position, dict) or not all(
            isinstance(k, str) and isinstance(v, int | str) and not isinstance(v, bool)
            for k, v in position.items()
        ):
            raise BadPageToken("malformed")
        return position

    def _mac(self, header: bytes, binding: bytes, body: bytes) -> bytes:
        digest = hashlib.sha256(binding).digest()
        return hmac.new(self._key, header + digest + body, hashlib.sha256).digest()[:MAC_BYTES]


def binding_of(method: str, tenant: str, request: Message) -> bytes:
    """What a page token of ``request`` is bound to: the RPC, the tenant and every field of the
    request except ``page_token`` and ``page_size`` (a caller may change the page size, AIP-158).
    """
    copy = type(request)()
    copy.CopyFrom(request)
    for name in ("page_token", "page_size"):
        if name in copy.DESCRIPTOR.fields_by_name:
            copy.ClearField(name)
    canonical = copy.SerializeToString(deterministic=True)
    return b"\x00".join((method.encode(), tenant.encode(), canonical))


def page_size_of(requested: int, default: int = 20, maximum: int = 100) -> int | None:
    """The page size a request asks for (0: ``default``; clamped to ``maximum``); ``None`` if
    negative."""
    if requested < 0:
        return None
    return default if requested == 0 else min(requested, maximum)

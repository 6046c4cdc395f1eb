"""The access gateway in front of some platforms: an OAuth2 password grant and Bearer tokens.

One northern province's gateway (platform-protocol.md §1) issues tokens at ``POST /oauth/token``
for ``grant_type=password`` with the client authenticated by ``Authorization: Basic
base64(clientId:clientSecret)``, and wants ``Authorization: Bearer <token>`` on every call. Tests
can expire every token at once (:meth:`OAuth2Gate.expire_all`) to watch the client log in again.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qs

TOKEN_PATH: Final = "/oauth/token"  # noqa: S105 - a URL path, not a secret


@dataclass
class OAuth2Gate:
    client_id: str
    client_secret: str
    username: str
    password: str
    ttl_seconds: int = 3600
    tokens: dict[str, float] = field(default_factory=dict)
    issued: int = 0

    def grant(self, authorization: str, form: bytes) -> tuple[int, bytes]:
        """Answer a token request: (HTTP status, JSON body)."""
        if authorization != "Basic " + _basic(self.client_id, self.client_secret):
            return 401, _json({"error": "invalid_client"})
        fields = {k: v[0] for k, v in parse_qs(form.decode("utf-8", "replace")).items()}
        if fields.get("grant_type") != "password":
            return 400, _json({"error": "unsupported_grant_type"})
        if (fields.get("username"), fields.get("password")) != (self.username, self.password):
            return 400, _json({"error": "invalid_grant"})
        token = secrets.token_urlsafe(24)
        self.tokens[token] = time.monotonic() + self.ttl_seconds
        self.issued += 1
        body = {"access_token": token, "token_type": "bearer", "expires_in": self.ttl_seconds}
        return 200, _json(body)

    def allows(self, authorization: str) -> bool:
        scheme, _, token = authorization.partition(" ")
        expiry = self.tokens.get(token) if scheme.lower() == "bearer" else None
        return expiry is not None and time.monotonic() < expiry

    def expire_all(self) -> None:
        self.tokens.clear()


def _basic(user: str, secret: str) -> str:
    return base64.b64encode(f"{user}:{secret}".encode()).decode("ascii")


def _json(value: object) -> bytes:
    return json.dumps(value).encode()

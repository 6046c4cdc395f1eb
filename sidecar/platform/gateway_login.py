"""How the sidecar logs in to an access gateway in front of the platform, if there is one.

Some deployments (platform-protocol.md §1) put an OAuth2 gateway in front: the client gets a token
with the password grant (client authenticated with ``Basic base64(clientId:clientSecret)``) and
sends ``Authorization: Bearer <token>`` on every call. ``OAuth2PasswordLogin`` fetches the token
over the same mutually authenticated connection, keeps it until shortly before it expires, and
fetches a new one when the gateway answers 401 (the transport then resends once: a 401 means the
gateway refused the request before the platform saw it). Secrets come from files.

The login knows no HTTP library: the transport hands it a ``FormPost`` that sends a form over its
own pool (httpx or libcurl) and returns the status and body.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Protocol

REFRESH_MARGIN_SECONDS = 30.0


class GatewayLoginError(Exception):
    """The gateway did not issue a token; the message names the reason, never a secret."""


class FormPostError(Exception):
    """The form did not reach the token endpoint or no answer came back."""


FormPost = Callable[[str, bytes, dict[str, str], float], Awaitable[tuple[int, bytes]]]
"""``post(url, form_body, headers, timeout) -> (status, body)``; FormPostError if no answer."""


class GatewayLogin(Protocol):
    async def headers(self, post: FormPost, timeout: float) -> dict[str, str]:
        """The headers that authenticate one call."""
        ...

    def invalidate(self) -> None:
        """Forget the credentials the gateway just refused."""
        ...


class NoLogin:
    """No access gateway: the mTLS client certificate is the only credential."""

    async def headers(self, post: FormPost, timeout: float) -> dict[str, str]:
        return {}

    def invalidate(self) -> None:
        pass


class OAuth2PasswordLogin:
    """OAuth2 resource-owner password grant, with the token cached until shortly before expiry."""

    def __init__(
        self, token_url: str, client_id: str, client_secret: str, username: str, password: str
    ) -> None:
        self._token_url = token_url
        basic = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode("ascii")
        self._client_auth = f"Basic {basic}"
        form = {"grant_type": "password", "username": username, "password": password}
        self._form = urllib.parse.urlencode(form).encode("ascii")
        self._token = ""
        self._expires = 0.0
        self._lock = asyncio.Lock()

    async def headers(self, post: FormPost, timeout: float) -> dict[str, str]:
        async with self._lock:
            if not self._token or time.monotonic() > self._expires - REFRESH_MARGIN_SECONDS:
                await self._fetch(post, timeout)
            return {"authorization": f"Bearer {self._token}"}

    def invalidate(self) -> None:
        self._token = ""

    async def _fetch(self, post: FormPost, timeout: float) -> None:
        headers = {
            "authorization": self._client_auth,
            "content-type": "application/x-www-form-urlencoded",
        }
        try:
            status, body = await post(self._token_url, self._form, headers, timeout)
        except FormPostError as exc:
            raise GatewayLoginError(f"cannot reach the token endpoint: {exc}") from None
        if status != 200:
            raise GatewayLoginError(f"the token endpoint answered HTTP {status}")
        try:
            answer = json.loads(body)
            token = str(answer["access_token"])
            lifetime = float(answer.get("expires_in", 300))
        except (ValueError, KeyError, TypeError):
            raise GatewayLoginError("the token endpoint's answer has no access_token") from None
        if not token:
            raise GatewayLoginError("the token endpoint issued an empty token")
        self._token, self._expires = token, time.monotonic() + lifetime

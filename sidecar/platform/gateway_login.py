"""How the sidecar logs in to an access gateway in front of the platform, if there is one.

Some deployments (platform-protocol.md §1) put an OAuth2 gateway in front: the client gets a token
with the password grant (client authenticated with ``Basic base64(clientId:clientSecret)``) and
sends ``Authorization: Bearer <token>`` on every call. ``OAuth2PasswordLogin`` fetches the token
over the same mutually authenticated connection, keeps it until shortly before it expires, and
fetches a new one when the gateway answers 401 (the transport then resends once: a 401 means the
gateway refused the request before the platform saw it). Secrets come from files.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Protocol

import httpx

REFRESH_MARGIN_SECONDS = 30.0


class GatewayLoginError(Exception):
    """The gateway did not issue a token; the message names the reason, never a secret."""


class GatewayLogin(Protocol):
    async def headers(self, client: httpx.AsyncClient, timeout: float) -> dict[str, str]:
        """The headers that authenticate one call."""
        ...

    def invalidate(self) -> None:
        """Forget the credentials the gateway just refused."""
        ...


class NoLogin:
    """No access gateway: the mTLS client certificate is the only credential."""

    async def headers(self, client: httpx.AsyncClient, timeout: float) -> dict[str, str]:
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
        self._form = {"grant_type": "password", "username": username, "password": password}
        self._token = ""
        self._expires = 0.0
        self._lock = asyncio.Lock()

    async def headers(self, client: httpx.AsyncClient, timeout: float) -> dict[str, str]:
        async with self._lock:
            if not self._token or time.monotonic() > self._expires - REFRESH_MARGIN_SECONDS:
                await self._fetch(client, timeout)
            return {"authorization": f"Bearer {self._token}"}

    def invalidate(self) -> None:
        self._token = ""

    async def _fetch(self, client: httpx.AsyncClient, timeout: float) -> None:
        try:
            response = await client.post(
                self._token_url,
                data=self._form,
                headers={"authorization": self._client_auth},
                timeout=timeout,
            )
        except httpx.HTTPError as exc:
            raise GatewayLoginError(
                f"cannot reach the token endpoint: {type(exc).__name__}"
            ) from None
        if response.status_code != 200:
            raise GatewayLoginError(f"the token endpoint answered HTTP {response.status_code}")
        try:
            answer = response.json()
            token = str(answer["access_token"])
            lifetime = float(answer.get("expires_in", 300))
        except (ValueError, KeyError, TypeError):
            raise GatewayLoginError("the token endpoint's answer has no access_token") from None
        if not token:
            raise GatewayLoginError("the token endpoint issued an empty token")
        self._token, self._expires = token, time.monotonic() + lifetime

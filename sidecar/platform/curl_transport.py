"""The tunnel to the platform gateway on libcurl (pycurl), driven by the asyncio event loop.

``CurlTransport`` is the sidecar's ``Transport`` (``[platform] transport = "curl"``, the only
one). libcurl brings what Python's ``ssl`` cannot: a TLS client key that stays in the HSM (OpenSSL's
``pkcs11`` engine, ``EngineKey``), and SPKI pinning checked inside the handshake
(CURLOPT_PINNEDPUBLICKEY), before any request byte. One multi handle is the keep-alive pool
(HTTP/2 streams multiplexed on it, or HTTP/1.1 connections, at most ``max_connections`` to the
gateway); its sockets and timer are watched by the event loop (CURLMOPT_SOCKETFUNCTION and
TIMERFUNCTION with ``add_reader``/``add_writer``/``call_later``): no thread per request.

With a key in the token, a handshake that fails because of the key (:func:`tls_key_fault`) is
recorded in ``KeyFaults`` and a request on a new connection clears it; TLS session resumption is
off for that key, so that every new connection is a full handshake signed in the token and a
resumed session can neither hide a lost key nor pass for a working one.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Callable
from pathlib import Path

import pycurl

from sidecar.config import PlatformConfig
from sidecar.platform.gateway_login import FormPostError, GatewayLogin, GatewayLoginError, NoLogin
from sidecar.platform.openssl_conf import load_openssl_conf
from sidecar.platform.tls_key_faults import KeyFaults
from sidecar.platform.transport import ClientIdentity, TransportError, TransportTimeout

# Failures that happen before the request is written: connecting, the TLS handshake (which
# includes the pinning check), the client key, the CA bundle.
_NOT_SENT = frozenset(
    {
        pycurl.E_COULDNT_RESOLVE_HOST,
        pycurl.E_COULDNT_CONNECT,
        pycurl.E_SSL_CONNECT_ERROR,
        pycurl.E_PEER_FAILED_VERIFICATION,
        pycurl.E_SSL_PINNEDPUBKEYNOTMATCH,
        pycurl.E_SSL_CERTPROBLEM,
        pycurl.E_SSL_CIPHER,
        pycurl.E_SSL_CACERT_BADFILE,
        pycurl.E_SSL_ENGINE_NOTFOUND,
        pycurl.E_SSL_ENGINE_SETFAILED,
        pycurl.E_SSL_ENGINE_INITFAILED,
        pycurl.E_USE_SSL_FAILED,
    }
)
PINNING_MISMATCH = "the gateway's TLS key is not one of the pinned keys"
# TLS alerts a server sends only while it refuses the handshake. With TLS 1.3 the client has
# finished its side of the handshake and may already have written the request when the alert
# arrives (libcurl then reports a receive error): the server never accepted the connection, so
# never read a request from it.
_HANDSHAKE_REFUSALS = (
    "alert unknown ca",
    "alert bad certificate",
    "alert certificate required",
    "alert certificate unknown",
    "alert certificate expired",
    "alert certificate revoked",
    "alert unsupported certificate",
    "alert access denied",
    "alert handshake failure",
)


# The TLS key's own failures, as libcurl reports them for a key held by OpenSSL's pkcs11 engine
# (libp11). The handshake's signature refused by the token: an OpenSSL error of one of libp11's
# error libraries, "PKCS#11 module" (the CKR_ code's text), "pkcs11 engine" or "libp11"; a token
# that vanished gives "OpenSSL/3.0.19: error:41800082:PKCS#11 module::Object handle invalid"
# (CURLE_SSL_CONNECT_ERROR). The key not loaded at all (token absent at the first load, login
# refused): curl's own fixed texts (CURLE_SSL_CERTPROBLEM). Nothing else (refused, timed out,
# DNS, the gateway's alerts, pinning) says anything about the key.
_LIBP11_ERROR = re.compile(
    r"(?:PKCS#11 module|pkcs11 engine|libp11)::([^:\n]{1,80})", re.IGNORECASE
)
_KEY_NOT_LOADED = frozenset(
    {
        "failed to load private key from crypto engine",
        "unable to set private key",
        "crypto engine not set, can't load private key",
    }
)


def tls_key_fault(code: int, message: str) -> tuple[str, str] | None:
    """What a failed transfer says about an engine-held TLS key: ``(reason, error)`` or None.

    ``reason`` is ``"pkcs11"`` or ``"key_load"``; ``error`` is the library's fixed text (the
    PKCS#11 return code's name, or curl's message), which never carries the PIN, URI or key.
    """
    if code not in (pycurl.E_SSL_CONNECT_ERROR, pycurl.E_SSL_CERTPROBLEM):
        return None
    found = _LIBP11_ERROR.search(message)
    if found is not None:
        return "pkcs11", found.group(1).strip()
    text = message.strip()
    if code == pycurl.E_SSL_CERTPROBLEM and text in _KEY_NOT_LOADED:
        return "key_load", text
    return None


def curl_pins(hex_pins: tuple[str, ...]) -> str:
    """``[platform] pinned_server_keys`` (SHA-256 hex of the SPKI) as CURLOPT_PINNEDPUBLICKEY."""
    return ";".join(
        "sha256//" + base64.b64encode(bytes.fromhex(pin)).decode("ascii") for pin in hex_pins
    )


class CurlFailure(Exception):
    """One transfer failed: the libcurl error code, its message, and whether bytes left."""

    def __init__(self, code: int, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.code = code
        self.sent = sent


class _Exchange:
    """One request on a pooled easy handle: the answer's bytes and the future that awaits it."""

    def __init__(self, handle: pycurl.Curl, future: asyncio.Future[int]) -> None:
        self.handle = handle
        self.future = future
        self.chunks: list[bytes] = []


# Told of every finished transfer: whether it opened a new connection, and its error if any.
Finished = Callable[[bool, tuple[int, str] | None], None]


class CurlPool:
    """A libcurl multi handle on the running event loop, with reused easy handles."""

    def __init__(
        self,
        configure: Callable[[pycurl.Curl], None],
        max_connections: int,
        *,
        on_finished: Finished | None = None,
    ) -> None:
        self._configure = configure
        self._on_finished = on_finished
        self._multi = pycurl.CurlMulti()
        self._multi.setopt(pycurl.M_SOCKETFUNCTION, self._on_socket)
        self._multi.setopt(pycurl.M_TIMERFUNCTION, self._on_timer)
        self._multi.setopt(pycurl.M_MAX_HOST_CONNECTIONS, max_connections)
        self._multi.setopt(pycurl.M_PIPELINING, pycurl.PIPE_MULTIPLEX)
        self._idle: list[pycurl.Curl] = []
        self._running: dict[pycurl.Curl, _Exchange] = {}
        self._watched: dict[int, int] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self.connects = 0  # connections opened so far (CURLINFO_NUM_CONNECTS summed)

    async def perform(
        self, prepare: Callable[[pycurl.Curl], None]
    ) -> tuple[int, bytes, pycurl.Curl]:
        """Run one transfer; its status and body (CurlFailure when no answer)."""
        if self._closed:
            raise CurlFailure(0, "the transport is closed", sent=False)
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        handle = self._idle.pop() if self._idle else self._new_handle()
        exchange = _Exchange(handle, loop.create_future())
        handle.setopt(pycurl.WRITEFUNCTION, exchange.chunks.append)
        prepare(handle)
        self._running[handle] = exchange
        self._multi.add_handle(handle)
        try:
            status = await exchange.future
        finally:
            if self._running.pop(handle, None) is not None:  # cancelled: stop the transfer
                self._multi.remove_handle(handle)
            handle.setopt(pycurl.WRITEFUNCTION, _discard)
            self._idle.append(handle)
        return status, b"".join(exchange.chunks), handle

    def _new_handle(self) -> pycurl.Curl:
        handle = pycurl.Curl()
        self._configure(handle)
        return handle

    # -- libcurl -> event loop ------------------------------------------------------------------
    def _on_socket(self, what: int, fd: int, multi: object, data: object) -> None:
        loop = self._loop
        if loop is None:
            return
        previous = self._watched.pop(fd, 0)
        if previous & pycurl.POLL_IN:
            loop.remove_reader(fd)
        if previous & pycurl.POLL_OUT:
            loop.remove_writer(fd)
        if what == pycurl.POLL_REMOVE:
            return
        if what & pycurl.POLL_IN:
            loop.add_reader(fd, self._act, fd, pycurl.CSELECT_IN)
        if what & pycurl.POLL_OUT:
            loop.add_writer(fd, self._act, fd, pycurl.CSELECT_OUT)
        self._watched[fd] = what

    def _on_timer(self, milliseconds: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if milliseconds >= 0 and self._loop is not None:
            self._timer = self._loop.call_later(
                milliseconds / 1000, self._act, pycurl.SOCKET_TIMEOUT, 0
            )

    def _act(self, fd: int, events: int) -> None:
        while True:
            result, _ = self._multi.socket_action(fd, events)
            if result != pycurl.E_CALL_MULTI_PERFORM:
                break
        self._collect()

    def _collect(self) -> None:
        while True:
            queued, done, failed = self._multi.info_read()
            for handle in done:
                self._finish(handle, None)
            for handle, code, message in failed:
                self._finish(handle, (code, message))
            if not queued:
                return

    def _finish(self, handle: pycurl.Curl, error: tuple[int, str] | None) -> None:
        exchange = self._running.pop(handle, None)
        self._multi.remove_handle(handle)
        connects = int(handle.getinfo(pycurl.NUM_CONNECTS))
        self.connects += connects
        if self._on_finished is not None:
            self._on_finished(connects > 0, error)
        if exchange is None or exchange.future.done():
            return
        if error is None:
            exchange.future.set_result(int(handle.getinfo(pycurl.RESPONSE_CODE)))
            return
        code, message = error
        # Anything after the connection was ready (pre-transfer) may have reached the gateway.
        sent = code not in _NOT_SENT and handle.getinfo(pycurl.PRETRANSFER_TIME) > 0
        exchange.future.set_exception(CurlFailure(code, message, sent=sent))

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        for handle, exchange in list(self._running.items()):
            self._multi.remove_handle(handle)
            if not exchange.future.done():
                exchange.future.set_exception(CurlFailure(0, "the transport closed", sent=True))
        self._running.clear()
        for handle in self._idle:
            handle.close()
        self._idle.clear()
        loop = self._loop
        if loop is not None and not loop.is_closed():
            for fd, what in self._watched.items():
                if what & pycurl.POLL_IN:
                    loop.remove_reader(fd)
                if what & pycurl.POLL_OUT:
                    loop.remove_writer(fd)
        self._watched.clear()
        self._multi.close()


def _discard(data: bytes) -> None:
    return None


class CurlTransport:
    """POSTs envelopes to one gateway URL over libcurl's pooled, mutually authenticated tunnel.

    ``config`` is ``[platform]``: URL and path, HTTP/2 or HTTP/1.1, the pool's size, the connect
    timeout, the pinned server keys. ``identity`` the client certificate with its key file or its
    HSM-held ``EngineKey``; ``login`` the access gateway's, from ``[platform.gateway_login]``;
    ``key_faults`` where an ``EngineKey``'s failures and recoveries are recorded (ignored with a
    key file).
    """

    def __init__(
        self,
        config: PlatformConfig,
        ca_file: Path,
        identity: ClientIdentity,
        *,
        login: GatewayLogin | None = None,
        key_faults: KeyFaults | None = None,
    ) -> None:
        self._url = config.url.rstrip("/") + config.path
        self._login = login or NoLogin()
        self._connect_timeout = config.connect_timeout_seconds
        self._http2 = config.http2
        self._ca_file = ca_file
        self._identity = identity
        self._pins = curl_pins(config.pinned_server_keys) if config.pinned_server_keys else None
        engine = identity.engine_key
        if engine is not None and engine.openssl_conf is not None:
            load_openssl_conf(engine.openssl_conf)
        self._key_faults = key_faults if engine is not None else None
        observe = self._observe_key if self._key_faults is not None else None
        self._pool = CurlPool(self._configure, config.max_connections, on_finished=observe)

    def _configure(self, handle: pycurl.Curl) -> None:
        """What every transfer shares: TLS, the identity, the pins, HTTP version, no proxies."""
        handle.setopt(pycurl.NOSIGNAL, 1)
        handle.setopt(pycurl.PROXY, "")  # like trust_env=False: no proxy from the environment
        handle.setopt(pycurl.FOLLOWLOCATION, 0)
        handle.setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTPS)
        handle.setopt(
            pycurl.HTTP_VERSION,
            pycurl.CURL_HTTP_VERSION_2TLS if self._http2 else pycurl.CURL_HTTP_VERSION_1_1,
        )
        handle.setopt(pycurl.PIPEWAIT, 1)  # prefer a stream on an open HTTP/2 connection
        handle.setopt(pycurl.SSLVERSION, pycurl.SSLVERSION_TLSv1_2)
        handle.setopt(pycurl.SSL_VERIFYPEER, 1)
        handle.setopt(pycurl.SSL_VERIFYHOST, 2)
        handle.setopt(pycurl.CAINFO, str(self._ca_file))
        handle.unsetopt(pycurl.CAPATH)  # only the CA bundle: not Debian's /etc/ssl/certs
        handle.setopt(pycurl.SSLCERT, str(self._identity.cert_file))
        handle.setopt(pycurl.SSLCERTTYPE, "PEM")
        engine = self._identity.engine_key
        if engine is not None:
            handle.setopt(pycurl.SSLENGINE, engine.engine)
            handle.setopt(pycurl.SSLKEYTYPE, "ENG")
            handle.setopt(pycurl.SSLKEY, engine.key_id)
            handle.setopt(pycurl.KEYPASSWD, engine.pin.reveal())
            # Every new connection signs in the token: a resumed session needs no key, so it
            # would hide a lost key and clear its fault (docs/hsm.md, "Session faults").
            handle.setopt(pycurl.SSL_SESSIONID_CACHE, 0)
        elif self._identity.key_file is not None:
            handle.setopt(pycurl.SSLKEY, str(self._identity.key_file))
            handle.setopt(pycurl.SSLKEYTYPE, "PEM")
        if self._pins is not None:
            handle.setopt(pycurl.PINNEDPUBLICKEY, self._pins)

    def _observe_key(self, new_connection: bool, error: tuple[int, str] | None) -> None:
        """A transfer finished: record a failure of the token's key, or its success on a new
        connection (a pooled connection proves nothing: it needs no signature)."""
        faults = self._key_faults
        if faults is None:
            return
        if error is None:
            if new_connection:
                faults.usable()
            return
        fault = tls_key_fault(*error)
        if fault is not None:
            faults.unusable(*fault)

    def _request(
        self, url: str, body: bytes | None, headers: dict[str, str], timeout: float
    ) -> Callable[[pycurl.Curl], None]:
        def prepare(handle: pycurl.Curl) -> None:
            handle.setopt(pycurl.URL, url)
            if body is None:
                handle.setopt(pycurl.HTTPGET, 1)
            else:
                handle.setopt(pycurl.POST, 1)
                handle.setopt(pycurl.POSTFIELDSIZE, len(body))
                handle.setopt(pycurl.COPYPOSTFIELDS, body)
            handle.setopt(pycurl.HTTPHEADER, [f"{k}: {v}" for k, v in headers.items()])
            handle.setopt(pycurl.TIMEOUT_MS, max(1, int(timeout * 1000)))
            connect = min(self._connect_timeout, timeout)
            handle.setopt(pycurl.CONNECTTIMEOUT_MS, max(1, int(connect * 1000)))

        return prepare

    async def post(self, body: bytes, *, timeout: float) -> bytes:
        status, content = await self._send(body, timeout)
        if status == 401:  # refused at the gateway: log in again and resend once
            self._login.invalidate()
            status, content = await self._send(body, timeout)
        if status != 200:
            raise TransportError(f"the platform answered HTTP {status}", sent=True)
        return content

    async def _send(self, body: bytes, timeout: float) -> tuple[int, bytes]:
        try:
            headers = await self._login.headers(self._post_form, timeout)
        except GatewayLoginError as exc:
            raise TransportError(f"gateway login failed: {exc}", sent=False) from None
        headers = {"content-type": "application/json; charset=utf-8", "expect": "", **headers}
        try:
            status, content, _ = await self._pool.perform(
                self._request(self._url, body, headers, timeout)
            )
        except CurlFailure as exc:
            raise _transport_error(exc) from None
        return status, content

    async def _post_form(
        self, url: str, body: bytes, headers: dict[str, str], timeout: float
    ) -> tuple[int, bytes]:
        try:
            status, content, _ = await self._pool.perform(
                self._request(url, body, {**headers, "expect": ""}, timeout)
            )
        except CurlFailure as exc:
            raise FormPostError(_reason(exc)) from None
        return status, content

    async def probe(self, *, timeout: float) -> int:
        """Whether the tunnel answers: a body-less GET of the endpoint; the HTTP status.

        It travels the same pool, TLS settings and pins as the transactions, so an answer proves
        name resolution, the mutual TLS handshake and an HTTP exchange with the gateway. It sends
        no envelope and signs nobody in; the endpoint answers a GET with 405 (or 401 in front of
        an access gateway). ``TransportError`` when no HTTP answer arrived.
        """
        try:
            status, _, _ = await self._pool.perform(self._request(self._url, None, {}, timeout))
        except CurlFailure as exc:
            error = _transport_error(exc)
            raise type(error)(f"cannot reach the platform: {_reason(exc)}", sent=False) from None
        return status

    def connections_opened(self) -> int:
        """How many connections the pool has opened so far (keep-alive makes this small)."""
        return self._pool.connects

    async def aclose(self) -> None:
        self._pool.close()


def _transport_error(exc: CurlFailure) -> TransportError:
    if exc.sent and any(alert in str(exc).lower() for alert in _HANDSHAKE_REFUSALS):
        exc = CurlFailure(exc.code, str(exc), sent=False)
    if exc.code == pycurl.E_OPERATION_TIMEDOUT:
        if exc.sent:
            return TransportTimeout("timed out waiting for the platform", sent=True)
        return TransportTimeout("timed out connecting to the platform", sent=False)
    if exc.code == pycurl.E_SSL_PINNEDPUBKEYNOTMATCH:
        return TransportError(f"cannot connect to the platform: {PINNING_MISMATCH}", sent=False)
    if not exc.sent:
        return TransportError(f"cannot connect to the platform: {_reason(exc)}", sent=False)
    return TransportError(f"connection to the platform failed: {_reason(exc)}", sent=True)


def _reason(exc: CurlFailure) -> str:
    text = str(exc) or f"libcurl error {exc.code}"
    return text.splitlines()[0][:200]

"""Kubernetes probes: grpc.health.v1 on a plaintext port of its own, one service name per probe.

The kubelet's gRPC probe cannot do TLS and cannot reach a Unix socket, so the probes get a
listener that carries nothing but the standard health service (``server.health_listen``). Each
probe asks for its own service name:

=========================  ==================================================================
``yibao.sidecar.startup``  SERVING from the first moment the HSM login is confirmed (if ``[hsm]``
                           is configured) and the platform tunnel answered; stays SERVING
``yibao.sidecar.readiness``  SERVING while the HSM login holds, re-checked every
                           ``server.health_check_interval_seconds`` (and the tunnel, if
                           ``server.readiness_includes_platform``), and the TLS key in the token
                           is usable; NOT_SERVING from SIGTERM on
``yibao.sidecar.liveness``  SERVING while the event loop answers: the answer is the proof, since
                           the health service runs on the same loop as everything else; NOT_SERVING
                           once the TLS key in the token has been unusable for
                           ``server.tls_key_unusable_seconds``
``""``                     the same as readiness
=========================  ==================================================================

The checks are plain async callables returning ``True`` when healthy, so tests can hand in
fakes; the real ones are :class:`HsmLoginCheck` and :class:`TunnelCheck`. The TLS key's state
comes from the tunnel itself (``KeyFaults``, sidecar/platform/tls_key_faults.py): libp11 never
recovers a key whose token vanished, so only a new process helps. Its changes are published at
once, not at the next round of checks: readiness turns NOT_SERVING as soon as a handshake fails
because of the key (the pod can open no new platform connection), liveness when the fault has
lasted ``tls_key_unusable_seconds``, and the kubelet restarts the container.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation
from pkcs11 import exceptions as p11e

from hsm.errors import HsmError, LoginError
from hsm.token import HsmToken, WorkerSession, session_handle
from sidecar.config import ServerConfig
from sidecar.platform.tls_key_faults import KeyFault, KeyFaults
from sidecar.platform.transport import TransportError

log = logging.getLogger(__name__)

STARTUP = "yibao.sidecar.startup"
READINESS = "yibao.sidecar.readiness"
LIVENESS = "yibao.sidecar.liveness"
SERVICE_NAMES = (STARTUP, READINESS, LIVENESS)

# Until start-up has passed, checks repeat this often (the kubelet's startupProbe polls too).
STARTUP_RETRY_SECONDS = 1.0
# Never wake more often than this for the TLS key's liveness deadline (rounding of the clock).
_MIN_WAIT_SECONDS = 0.01

Check = Callable[[], Awaitable[bool]]

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HsmLoginCheck:
    """The token's login holds: a worker session must be a user session.

    A session that is gone or no longer logged in raises ``UserNotLoggedIn`` inside the worker,
    which makes the pool recover exactly as it would for a signature (reopen, log in again once).
    A refused PIN is never tried again: after a ``LoginError`` this check answers ``False`` until
    the process restarts (with a corrected PIN file), so probes cannot lock the token. An HSM that
    does not answer within ``timeout`` seconds counts as a lost login.
    """

    def __init__(self, token: HsmToken, timeout: float = 5.0) -> None:
        self._token = token
        self._timeout = timeout
        self._refused = False

    async def __call__(self) -> bool:
        if self._refused:
            return False
        try:
            async with asyncio.timeout(self._timeout):
                await self._token.run(self._confirm)
        except TimeoutError:  # a network HSM that does not answer: not logged in, as far as we know
            log.warning("probes.hsm_unavailable", extra={"error": "timeout"})
            return False
        except LoginError:
            self._refused = True
            log.error("probes.hsm_login_refused", extra={"token": self._token.token_label})
            return False
        except (HsmError, p11e.PKCS11Error) as exc:
            log.warning("probes.hsm_unavailable", extra={"error": type(exc).__name__})
            return False
        return True

    def _confirm(self, ws: WorkerSession) -> None:
        if not self._token.raw.is_user_logged_in(session_handle(ws.p11)):
            raise p11e.UserNotLoggedIn()


class Probeable(Protocol):
    async def probe(self, *, timeout: float) -> int: ...


class TunnelCheck:
    """The platform tunnel answers: any HTTP status below 500 to the transport's probe."""

    def __init__(self, transport: Probeable, timeout: float) -> None:
        self._transport = transport
        self._timeout = timeout

    async def __call__(self) -> bool:
        try:
            status = await self._transport.probe(timeout=self._timeout)
        except TransportError as exc:
            log.warning("probes.platform_unreachable", extra={"error": str(exc)})
            return False
        if status >= 500:
            log.warning("probes.platform_unreachable", extra={"http_status": status})
            return False
        return True


class Probes:
    """The health listener and the loop that keeps its three service names true.

    ``config`` is ``[server]`` as pydantic validated it: ``health_listen`` (which must be set),
    ``health_check_interval_seconds``, ``readiness_includes_platform``,
    ``tls_key_unusable_seconds``. ``tls_key`` is the tunnel's record of the TLS key in the token
    (``None`` with a key file, which has no such fault).
    """

    def __init__(
        self,
        config: ServerConfig,
        *,
        hsm: Check | None,
        platform: Check,
        tls_key: KeyFaults | None = None,
        meter: metrics.Meter | None = None,
    ) -> None:
        if config.health_listen is None:
            raise ValueError("server.health_listen is not set: there is nowhere to serve probes")
        self._listen = config.health_listen
        self._hsm = hsm
        self._platform = platform
        self._interval = config.health_check_interval_seconds
        self._readiness_includes_platform = config.readiness_includes_platform
        self._tls_key = tls_key
        self._tls_key_unusable_seconds = config.tls_key_unusable_seconds
        self._wake = asyncio.Event()  # the TLS key's state changed: publish before the next round
        self._live = True
        self._server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        # grpc-stubs has no type for the asyncio health servicer.
        self.health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self._task: asyncio.Task[None] | None = None
        self._started = False
        self._draining = False
        self.hsm_ok: bool | None = None
        self.platform_ok: bool | None = None
        self.port: int | None = None
        meter = meter or metrics.NoOpMeter("yibao-sidecar")
        meter.create_observable_gauge(
            "yibao.hsm.logged_in",
            callbacks=[self._observe_hsm],
            description="1 while the HSM login holds (as last checked by the probes)",
        )
        meter.create_observable_gauge(
            "yibao.platform.reachable",
            callbacks=[self._observe_platform],
            description="1 while the platform tunnel answers (as last checked by the probes)",
        )
        if tls_key is not None:
            meter.create_observable_gauge(
                "yibao.tls_key.usable",
                callbacks=[self._observe_tls_key],
                description="1 while the platform TLS key in the token signs new handshakes",
            )
            tls_key.subscribe(self._tls_key_changed)

    async def start(self) -> None:
        """Listen at once, NOT_SERVING except liveness, and start checking."""
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        try:
            self.port = self._server.add_insecure_port(self._listen)
        except RuntimeError:  # grpc's only signal: "Failed to bind to address ..."
            raise OSError(f"cannot listen on {self._listen}") from None
        for name in ("", STARTUP, READINESS):
            await self.health.set(name, _NOT_SERVING)
        await self.health.set(LIVENESS, _SERVING)
        await self._server.start()
        self._task = asyncio.create_task(self._run(), name="probes")
        log.info("probes.started", extra={"listen": self._listen, "port": self.port})

    async def draining(self) -> None:
        """SIGTERM: no longer ready (liveness holds, so the drain is not cut short)."""
        self._draining = True
        await self._stop_checking()
        for name in ("", READINESS):
            await self.health.set(name, _NOT_SERVING)

    async def stop(self) -> None:
        """Close the health listener: the last thing before the process exits."""
        await self._stop_checking()
        await self._server.stop(0)

    async def check_once(self) -> None:
        """Run the checks and set the service statuses from their answers."""
        hsm_ok = await self._hsm() if self._hsm is not None else True
        platform_ok = await self._platform()
        self._record("hsm", self.hsm_ok, hsm_ok)
        self._record("platform", self.platform_ok, platform_ok)
        self.hsm_ok, self.platform_ok = hsm_ok, platform_ok
        if self._draining:
            return
        if not self._started and hsm_ok and platform_ok:
            self._started = True
            await self.health.set(STARTUP, _SERVING)
            log.info("probes.startup_passed")
        await self.publish()

    async def publish(self) -> None:
        """Set readiness and liveness from the last checks' answers and the TLS key's state."""
        if self._draining:
            return
        key_usable = self._tls_key is None or self._tls_key.fault is None
        platform_ok = bool(self.platform_ok) or not self._readiness_includes_platform
        ready = self._started and bool(self.hsm_ok) and platform_ok and key_usable
        for name in ("", READINESS):
            await self.health.set(name, _SERVING if ready else _NOT_SERVING)
        unusable_for = self._tls_key.unusable_for() if self._tls_key is not None else None
        live = unusable_for is None or unusable_for < self._tls_key_unusable_seconds
        if live is not self._live:
            self._live = live
            await self.health.set(LIVENESS, _SERVING if live else _NOT_SERVING)
            if unusable_for is not None and not live:  # the kubelet restarts the container
                log.error(
                    "probes.tls_key_restart", extra={"unusable_seconds": round(unusable_for, 1)}
                )

    async def _run(self) -> None:
        while True:
            try:
                await self.check_once()
            except Exception as exc:  # a probe must never die silently; the next round retries
                log.error("probes.check_failed", extra={"error": type(exc).__name__})
            await self._until_next_round(self._interval if self._started else STARTUP_RETRY_SECONDS)

    async def _until_next_round(self, seconds: float) -> None:
        """Wait ``seconds``; meanwhile publish at once when the TLS key's state changes, and
        when its fault reaches ``tls_key_unusable_seconds``."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while (left := end - loop.time()) > 0:
            wait = left
            unusable_for = self._tls_key.unusable_for() if self._tls_key is not None else None
            if self._live and unusable_for is not None:  # wake when liveness must turn
                due = self._tls_key_unusable_seconds - unusable_for
                wait = min(wait, max(due, _MIN_WAIT_SECONDS))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            if not self._wake.is_set() and wait >= left:
                return  # the round is due: check_once publishes
            try:
                await self.publish()
            except Exception as exc:  # as for a round of checks: log, carry on
                log.error("probes.check_failed", extra={"error": type(exc).__name__})

    def _tls_key_changed(self, fault: KeyFault | None) -> None:
        """The tunnel's record of the TLS key changed: log it and publish without waiting."""
        if fault is not None:
            log.warning(
                "probes.tls_key_unusable", extra={"reason": fault.reason, "error": fault.error}
            )
        else:
            log.info("probes.tls_key_usable_again")
        self._wake.set()

    async def _stop_checking(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @staticmethod
    def _record(what: str, before: bool | None, now: bool) -> None:
        if before is not now:
            level = logging.INFO if now else logging.WARNING
            log.log(level, "probes.changed", extra={"check": what, "ok": now})

    def _observe_hsm(self, _: CallbackOptions) -> list[Observation]:
        if self._hsm is None or self.hsm_ok is None:
            return []
        return [Observation(int(self.hsm_ok))]

    def _observe_platform(self, _: CallbackOptions) -> list[Observation]:
        return [] if self.platform_ok is None else [Observation(int(self.platform_ok))]

    def _observe_tls_key(self, _: CallbackOptions) -> list[Observation]:
        if self._tls_key is None:
            return []
        return [Observation(int(self._tls_key.fault is None))]

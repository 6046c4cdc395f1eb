"""The composition root: the one place that builds the components and wires them together.

Everything else receives what it needs through its constructor. Start-up problems that a
configuration can cause (unreadable certificate files, a bad key) become ``ConfigError`` naming
the key, so that ``yibao-sidecar serve`` stops with one line instead of a traceback.
"""

from __future__ import annotations

import logging
import ssl
import uuid
from dataclasses import dataclass
from pathlib import Path

from opentelemetry.metrics import Meter
from opentelemetry.trace import Tracer

from sidecar import config, logs, telemetry, telemetry_export
from sidecar.config import ConfigError, GatewayLoginConfig, Settings, read_secret
from sidecar.gateway.consent import ConsentService
from sidecar.gateway.eligibility import EligibilityChecks
from sidecar.gateway.enrollment import EnrollmentQueries
from sidecar.gateway.service import InsuranceGatewayService
from sidecar.hsm_link import HsmLink, open_hsm
from sidecar.interceptors.access_log import AccessLog
from sidecar.interceptors.caller import CallerIdentity
from sidecar.interceptors.chain import FilterChain
from sidecar.interceptors.tracing import Tracing
from sidecar.platform.client import Codes, Institution, PlatformClient
from sidecar.platform.freshness import ReplayGuard
from sidecar.platform.gateway_login import GatewayLogin, NoLogin, OAuth2PasswordLogin
from sidecar.platform.msgid import MsgIdGenerator
from sidecar.platform.resilience import Guard, ResiliencePolicy
from sidecar.platform.sealing import Sealing
from sidecar.platform.transport import ClientIdentity, HttpsTransport, client_tls_context
from sidecar.security_link import build_sealing
from sidecar.server import Listen, Server, serve_until_signalled

log = logging.getLogger(__name__)


@dataclass
class Sidecar:
    """A wired sidecar: the server to run and what must be closed after it stops."""

    server: Server
    platform: PlatformClient
    telemetry: telemetry.Telemetry
    hsm: HsmLink | None = None

    async def close(self) -> None:
        await self.platform.close()
        if self.hsm is not None:
            self.hsm.close()
        self.telemetry.shutdown()


def build(settings: Settings, observability: telemetry.Telemetry | None = None) -> Sidecar:
    """Wire a sidecar; ``observability`` defaults to the exporters of ``[telemetry]``."""
    observability = observability or telemetry_export.build(settings.telemetry)
    meter = observability.meter
    user_id = settings.platform.security.user_id.encode()
    hsm: HsmLink | None = None
    try:
        hsm = open_hsm(settings.hsm, user_id) if settings.hsm is not None else None
        sealing = build_sealing(
            settings.platform.security,
            hsm.signer if hsm else None,
            tracer=observability.tracer,
            meter=meter,
        )
        platform = _platform_client(settings, observability.tracer, meter, sealing)
    except BaseException:
        if hsm is not None:
            hsm.close()
        observability.shutdown()  # the scrape endpoint's port, the exporters' threads
        raise
    codes = settings.platform.transactions
    people = EnrollmentQueries(platform, codes.person_info)
    gateway = InsuranceGatewayService(
        enrollment=people,
        eligibility=EligibilityChecks(
            people, platform, codes.benefit_check, settings.institution.code
        ),
    )
    consent = ConsentService()
    registrations = [gateway.registration(), consent.registration()]
    chain = FilterChain(
        [AccessLog(), Tracing(observability.tracer, meter), CallerIdentity()],
        services=[registration.name for registration in registrations],
    )
    server = Server(
        registrations,
        Listen(
            socket_path=settings.server.socket_path,
            socket_mode=settings.server.socket_mode,
            tcp=settings.server.tcp_listen,
        ),
        interceptors=[chain],
        max_message_bytes=settings.server.max_message_bytes,
        max_concurrent_rpcs=settings.server.max_concurrent_rpcs,
        grace_period=settings.server.grace_period_seconds,
    )
    return Sidecar(server=server, platform=platform, telemetry=observability, hsm=hsm)


def _platform_client(
    settings: Settings, tracer: Tracer, meter: Meter, sealing: Sealing
) -> PlatformClient:
    p = settings.platform
    for key, path in (
        ("platform.ca_file", p.ca_file),
        ("platform.client_cert_file", p.client_cert_file),
        ("platform.client_key_file", p.client_key_file),
    ):
        if not path.is_file():
            raise ConfigError(f"config: {key}: {path} is not a readable file")
    try:
        tls = client_tls_context(p.ca_file, ClientIdentity(p.client_cert_file, p.client_key_file))
    except ssl.SSLError as exc:
        raise ConfigError(
            f"config: platform.ca_file/client_cert_file/client_key_file: unusable ({exc.reason})"
        ) from None
    transport = HttpsTransport(
        p.url.rstrip("/") + p.path,
        tls,
        http2=p.http2,
        max_connections=p.max_connections,
        connect_timeout=p.connect_timeout_seconds,
        login=_gateway_login(p.gateway_login),
        pins=p.pinned_server_keys,
    )
    r = p.resilience
    policy = ResiliencePolicy(
        retry_attempts=r.retry_attempts,
        retry_initial_backoff=r.retry_initial_backoff_seconds,
        retry_max_backoff=r.retry_max_backoff_seconds,
        breaker_failure_threshold=r.breaker_failure_threshold,
        breaker_open_seconds=r.breaker_open_seconds,
        max_in_flight=r.max_in_flight,
    )
    i = settings.institution
    return PlatformClient(
        transport,
        MsgIdGenerator(i.code, slot=p.msgid.slot, slots=p.msgid.slots),
        Institution(
            code=i.code,
            name=i.name,
            division=i.division,
            receiver_system_code=i.receiver_system_code,
            interface_version=i.interface_version,
            operator_type=i.operator_type,
            mac=_mac_address(),
            ip=i.sign_in_ip,
        ),
        Codes(sign_in=p.transactions.sign_in, sign_out=p.transactions.sign_out),
        timeout=p.timeout_seconds,
        sign_in_expired_markers=p.sign_in_expired_messages,
        guard=Guard(p.url, policy, meter),
        sealing=sealing,
        replay_guard=ReplayGuard(p.freshness_window_seconds),
        tracer=tracer,
        meter=meter,
    )


def _gateway_login(config: GatewayLoginConfig) -> GatewayLogin:
    if config.scheme == "none":
        return NoLogin()
    secrets = {
        key: read_secret(getattr(config, key), f"platform.gateway_login.{key}")
        for key in ("client_secret_file", "password_file")
    }
    token_url, client_id, username = config.token_url, config.client_id, config.username
    if token_url is None or client_id is None or username is None:  # the validator demands them
        raise ConfigError("config: platform.gateway_login: incomplete")
    return OAuth2PasswordLogin(
        token_url,
        client_id,
        secrets["client_secret_file"],
        username,
        secrets["password_file"],
    )


def _mac_address() -> str:
    """This host's MAC address as sign-in reports it (``uuid.getnode``'s choice)."""
    node = uuid.getnode()
    return ":".join(f"{(node >> shift) & 0xFF:02X}" for shift in range(40, -1, -8))


async def serve(config_path: Path) -> int:
    """``yibao-sidecar serve``: load, validate, build, run until SIGTERM, drain, close."""
    settings = config.load(config_path)
    logs.configure(settings.log.level)
    sidecar = build(settings)
    try:
        await serve_until_signalled(sidecar.server, on_stop=sidecar.close)
    except OSError as exc:  # the socket path or port cannot be used
        await sidecar.close()
        raise StartupError(f"yibao-sidecar: cannot start: {exc}") from None
    return 0


class StartupError(Exception):
    """The sidecar could not start for a reason outside its configuration's syntax."""

"""The composition root: the one place that builds the components and wires them together.

Everything else receives what it needs through its constructor. Start-up problems that a
configuration can cause (unreadable certificate files, a bad key) become ``ConfigError`` naming
the key, so that ``yibao-sidecar serve`` stops with one line instead of a traceback.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import ssl
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc
from opentelemetry.metrics import Meter

from hsm import versions
from hsm.datakeys import DataKeys
from hsm.errors import HsmError
from sidecar import config
from sidecar.access.front import PeerCredentialFront
from sidecar.access.policy import PolicyError, PolicyFile
from sidecar.access.ratelimit import RateLimiter
from sidecar.audit.filter import AuditFilter
from sidecar.audit.hsm_keys import AuditKeys, open_pseudonyms
from sidecar.audit.link import audit_keys, build_trail
from sidecar.audit.metrics import observe_spool
from sidecar.audit.schema import MIGRATIONS as AUDIT_MIGRATIONS
from sidecar.audit.trail import AuditTrail
from sidecar.audit.writer import AuditUnavailable
from sidecar.compliance import consent_ledger
from sidecar.compliance.consent_gate import ConsentGate
from sidecar.compliance.consent_ledger import ConsentLedger
from sidecar.compliance.pseudonyms import HostPrf, KeyedDigests, KeyedPrf
from sidecar.config import (
    ConfigError,
    ConsentConfig,
    GatewayLoginConfig,
    ServerTlsConfig,
    Settings,
    read_secret,
)
from sidecar.gateway import offsite_store
from sidecar.gateway.account import AccountQueries
from sidecar.gateway.cache import ReadCache
from sidecar.gateway.consent import ConsentService
from sidecar.gateway.eligibility import EligibilityChecks
from sidecar.gateway.enrollment import EnrollmentQueries
from sidecar.gateway.paging import PageTokens
from sidecar.gateway.registrations import OffsiteRegistrations
from sidecar.gateway.service import InsuranceGatewayService
from sidecar.gateway.settlement import SettlementFunctions
from sidecar.interceptors.access_control import AccessControl, rpc_names
from sidecar.interceptors.access_log import AccessLog
from sidecar.interceptors.caller import CallerIdentity
from sidecar.interceptors.chain import FilterChain
from sidecar.interceptors.time_fields import TimeFields
from sidecar.interceptors.tracing import Tracing
from sidecar.keys import certexpiry
from sidecar.keys.fieldcrypt import FieldSealer, HostKeyWrapper
from sidecar.keys.hsm_link import HsmLink, open_hsm
from sidecar.keys.security_link import build_sealing
from sidecar.keys.tls_key import TokenTlsKey, file_key_warning, token_tls_key
from sidecar.observability import logs, telemetry, telemetry_export
from sidecar.platform import msgid_lease
from sidecar.platform.client import PlatformClient
from sidecar.platform.curl_transport import CurlTransport
from sidecar.platform.gateway_login import GatewayLogin, NoLogin, OAuth2PasswordLogin
from sidecar.platform.msgid import MsgIdGenerator, MsgIds
from sidecar.platform.msgid_lease import LeasedMsgIds, SlotLease
from sidecar.platform.tls_key_faults import KeyFaults
from sidecar.platform.transport import ClientIdentity, TlsFilesError, check_tls_files
from sidecar.serving.probes import HsmLoginCheck, Probes, TunnelCheck
from sidecar.serving.server import Server, event_loop_factory, serve_until_signalled
from sidecar.settlement import MIGRATIONS as SETTLEMENT_MIGRATIONS
from sidecar.settlement.machine import Settlements
from sidecar.settlement.records import SettlementRecords
from sidecar.settlement.resolver import Resolver
from sidecar.store import Migration, Store, StoreError, open_store

log = logging.getLogger(__name__)


@dataclass
class Sidecar:
    """A wired sidecar: the server to run and what must be closed after it stops."""

    server: Server
    platform: PlatformClient
    telemetry: telemetry.Telemetry
    store: Store
    migrations: tuple[Migration, ...] = ()
    hsm: HsmLink | None = None
    tls_key: TokenTlsKey | None = None
    resolver: Resolver | None = None
    probes: Probes | None = None
    certificates: certexpiry.CertificateWatch | None = None
    msgid_lease: SlotLease | None = None
    audit: AuditTrail | None = None
    warnings: tuple[str, ...] = ()  # logged once the listeners are up

    def started(self) -> None:
        """The listeners are up: say how long our certificates last, and what is unsafe."""
        for warning in self.warnings:
            log.warning(warning)
        if self.certificates is not None:
            self.certificates.log_remaining()

    async def draining(self) -> None:
        """SIGTERM arrived: stop being ready before the drain starts."""
        if self.probes is not None:
            await self.probes.draining()

    async def prepare(self) -> None:
        """Before serving: bring the shared store's schema up to date (StoreError if it cannot)."""
        await self.store.migrate(self.migrations)
        if self.msgid_lease is not None:
            try:
                await self.msgid_lease.start()
            except msgid_lease.NoFreeSlot as exc:
                raise StoreError(f"msgid: {exc}") from None
        if self.audit is not None:
            try:
                await self.audit.start()
            except AuditUnavailable as exc:
                raise StoreError(f"audit: {exc}") from None
        if self.resolver is not None:
            self.resolver.start()  # settlements left unresolved by an earlier run

    async def close(self) -> None:
        if self.resolver is not None:
            await self.resolver.stop()
        if self.msgid_lease is not None:
            await self.msgid_lease.stop()
        await self.platform.close()
        if self.audit is not None:
            await self.audit.close()  # after sign-out, whose transactions it records
        await self.store.close()
        if self.tls_key is not None:
            self.tls_key.close()
        if self.hsm is not None:
            self.hsm.close()
        self.telemetry.shutdown()
        if self.probes is not None:  # last: the kubelet's liveness answers until the very end
            await self.probes.stop()


def build(settings: Settings, observability: telemetry.Telemetry | None = None) -> Sidecar:
    """Wire a sidecar; ``observability`` defaults to the exporters of ``[telemetry]``."""
    observability = observability or telemetry_export.build(settings.telemetry)
    meter = observability.meter
    user_id = settings.platform.security.user_id.encode()
    store = open_store(settings.store)
    lease, msgids = _msgids(settings, store)
    hsm: HsmLink | None = None
    tls_key: TokenTlsKey | None = None
    key_faults: KeyFaults | None = None
    trail: AuditTrail | None = None
    try:
        hsm = open_hsm(settings.hsm, user_id) if settings.hsm is not None else None
        keys: AuditKeys | None = None
        if settings.audit is not None and hsm is not None:  # the settings demand [hsm]
            keys = audit_keys(hsm.token)
            trail = build_trail(settings.audit, store, keys)
            observe_spool(meter, trail.writer)
        # One pseudonym function for the trail, the consent ledger, settlements and offsite.
        prf = _pseudonym_prf(settings.consent, hsm, keys)
        pseudonymizer = KeyedDigests(prf)
        sealing = build_sealing(
            settings.platform.security,
            hsm.signer if hsm else None,
            tracer=observability.tracer,
            meter=meter,
        )
        if settings.platform.client_key is not None and settings.hsm and hsm:  # settings demand
            tls_key = token_tls_key(settings.platform, settings.hsm, hsm.token)
            key_faults = KeyFaults(time.monotonic)  # the tunnel records, the probes read
        transport = _transport(settings, tls_key, key_faults)
        platform = PlatformClient(
            transport,
            msgids,
            settings.institution,
            settings.platform,
            mac=_mac_address(),
            sealing=sealing,
            tracer=observability.tracer,
            meter=meter,
            recorder=trail,
        )
        certificates = _certificate_watch(settings, hsm, meter)
        sealer = _field_sealer(settings, hsm)
    except BaseException:
        if tls_key is not None:
            tls_key.close()
        if hsm is not None:
            hsm.close()
        observability.shutdown()  # the scrape endpoint's port, the exporters' threads
        raise
    migrations: tuple[Migration, ...] = consent_ledger.MIGRATIONS + msgid_lease.MIGRATIONS
    if trail is not None:
        migrations += AUDIT_MIGRATIONS
    ledger = ConsentLedger(store)
    codes = settings.platform.transactions
    people = EnrollmentQueries(platform, settings.platform)
    function_key = _function_key(settings)
    tokens = PageTokens(_derived(function_key, b"page-tokens"))
    # mutating functions (and consent revocation) call cache.invalidate
    cache = ReadCache(settings.cache, key=_derived(function_key, b"read-cache"), meter=meter)
    offsite = OffsiteRegistrations(
        people,
        platform,
        offsite_store.OffsiteStore(store, settings.offsite, sealer=sealer, digests=pseudonymizer),
        tokens,
        codes,
        settings.offsite,
        cache=cache,
    )
    migrations += offsite_store.MIGRATIONS
    settlements = Settlements(  # every settle and cancel invalidates its subject's cache
        SettlementRecords(store, sealer),
        platform,
        settings.institution,
        codes,
        settings.settlement,
        replica=_replica(settings),
        cache=cache,
    )
    migrations += SETTLEMENT_MIGRATIONS
    gateway = InsuranceGatewayService(
        enrollment=people,
        eligibility=EligibilityChecks(people, platform, codes, settings.institution),
        account=AccountQueries(people, platform, tokens, codes),
        offsite=offsite,
        tokens=tokens,
        cache=cache,
        offsite_policy=settings.offsite,
        settlement=SettlementFunctions(
            settlements,
            pseudonymizer,
            settings.institution,
            settings.settlement,
            person_not_found=settings.platform.person_not_found_messages,
        ),
    )
    consent = ConsentService(ledger, pseudonymizer, cache=cache)
    registrations = [gateway.registration(), consent.registration()]
    services = [registration.name for registration in registrations]
    tcp_credentials = _tcp_credentials(settings.server.tls)
    access, front = _access_control(settings, services)  # last: it makes a directory
    audit = AuditFilter(trail) if trail is not None else None
    chain = FilterChain(
        [  # guards: before the request is decoded (they never see it)
            AccessLog(),
            Tracing(observability.tracer, meter),
            *([audit.around] if audit else []),  # outside the refusing guards
            *[a.workload for a in access],  # an unknown peer: the first refusal
            CallerIdentity(),
            *[a.tenant for a in access],
        ],
        [  # filters: the chain decoded the request (or refused it: MALFORMED_REQUEST)
            *([audit.request] if audit else []),  # the intent, before anything can refuse
            TimeFields(),
            ConsentGate(ledger, pseudonymizer),
        ],
        services=services,
    )
    server = Server(
        registrations,
        settings.server,
        tcp_credentials=tcp_credentials,
        front=front,
        interceptors=[chain],
    )
    probes = None
    if settings.server.health_listen:
        probes = Probes(
            settings.server,
            hsm=HsmLoginCheck(hsm.token) if hsm else None,
            platform=TunnelCheck(transport, settings.platform.connect_timeout_seconds),
            tls_key=key_faults,
            meter=meter,
        )
    return Sidecar(
        server=server,
        platform=platform,
        telemetry=observability,
        store=store,
        migrations=migrations,
        hsm=hsm,
        probes=probes,
        certificates=certificates,
        msgid_lease=lease,
        audit=trail,
        tls_key=tls_key,
        warnings=_warnings(settings, prf),
        resolver=Resolver(settlements, settings.settlement),
    )


def _field_sealer(settings: Settings, hsm: HsmLink | None) -> FieldSealer:
    """Sealed columns (``offsite_requests.outcome``, ``settlement_records.psn_no_sealed``): data
    keys wrapped by the HSM's active KEK; without ``[hsm]`` (development only) by a host key
    derived from ``consent.pseudonym_key_file``; its first data key logs a warning saying so
    (docs/compliance.md; not at start-up, whose failures are one line)."""
    if hsm is not None:
        data_keys = DataKeys(hsm.token)
        try:
            data_keys.active_kek()
        except HsmError as exc:
            raise ConfigError(
                f"hsm: {exc} (sealed columns: yibao-hsm keygen --purpose kek)"
            ) from None
        return FieldSealer(data_keys)
    path = settings.consent.pseudonym_key_file
    if path is None:  # _pseudonym_prf has refused this already
        raise ConfigError("config: consent.pseudonym_key_file: required (a file of 32+ hex digits)")
    host_key = read_secret(path, "consent.pseudonym_key_file").encode()
    return FieldSealer(HostKeyWrapper(_derived(host_key, b"field-sealing-kek")[:16]))


def _replica(settings: Settings) -> str:
    """A configured msgid slot is unique among live replicas: a restarted replica may take over
    the settlements its dead predecessor held. A leased slot is known only after start-up and
    changes hands on expiry, so then rows wait for their lease to run out instead."""
    slot = settings.platform.msgid.slot
    return "" if slot == "lease" else f"slot{slot}"


def _access_control(
    settings: Settings, services: list[str]
) -> tuple[list[AccessControl], PeerCredentialFront | None]:
    """The access filter and the Unix socket's peer-credential front, if ``[access]`` is set."""
    a = settings.access
    if a is None:  # server.started says access_control false
        return [], None
    try:
        policy = PolicyFile(a.policy_file, rpc_names(services), a.reload_interval_seconds)
    except PolicyError as exc:
        raise ConfigError(f"config: access.policy_file: {exc}") from None
    try:
        front = PeerCredentialFront(a.private_socket_parent)
    except OSError as exc:
        raise ConfigError(
            f"config: access.private_socket_parent: cannot make a directory: {exc.strerror}"
        ) from None
    return [AccessControl(policy, front.lookup, RateLimiter())], front


def _tcp_credentials(tls: ServerTlsConfig | None) -> grpc.ServerCredentials | None:
    """Mutual TLS for the TCP listener: callers must present a certificate of the client CA."""
    if tls is None:
        return None
    pem = {
        key: read_secret(getattr(tls, key), f"server.tls.{key}").encode()
        for key in ("cert_file", "key_file", "client_ca_file")
    }
    check = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:  # grpc would only fail at the first handshake; say what is wrong at start-up
        check.load_cert_chain(tls.cert_file, tls.key_file)
        check.load_verify_locations(cadata=pem["client_ca_file"].decode())
    except ssl.SSLError as exc:
        raise ConfigError(
            f"config: server.tls.cert_file/key_file/client_ca_file: unusable ({exc.reason})"
        ) from None
    return grpc.ssl_server_credentials(
        [(pem["key_file"], pem["cert_file"])],
        root_certificates=pem["client_ca_file"],
        require_client_auth=True,
    )


def _certificate_watch(
    settings: Settings, hsm: HsmLink | None, meter: Meter
) -> certexpiry.CertificateWatch:
    try:
        certificates = [certexpiry.from_pem_file("tls_client", settings.platform.client_cert_file)]
        signing = certexpiry.signing_certificate(hsm.token, hsm.key_label) if hsm else None
    except certexpiry.CertificateUnreadable as exc:
        raise ConfigError(f"config: platform.client_cert_file/hsm: {exc}") from None
    if signing is not None:
        certificates.append(signing)
    elif hsm is not None:
        log.info("certificate.signing_absent", extra={"key": hsm.key_label})
    return certexpiry.CertificateWatch(certificates, meter)


def _warnings(settings: Settings, prf: KeyedPrf) -> tuple[str, ...]:
    """What is unsafe in this configuration, logged once the listeners are up."""
    found = []
    if isinstance(prf, HostPrf):
        found.append("pseudonyms.host_key_development_only")
    file_key = file_key_warning(settings.platform, settings.hsm)
    if file_key is not None:
        found.append(file_key)
    return tuple(found)


def _transport(
    settings: Settings, tls_key: TokenTlsKey | None, key_faults: KeyFaults | None
) -> CurlTransport:
    """The tunnel (libcurl); ``tls_key`` is the client identity whose key is in the HSM, and
    ``key_faults`` where the tunnel records that key's failures."""
    p = settings.platform
    for key, path in (
        ("platform.ca_file", p.ca_file),
        ("platform.client_cert_file", p.client_cert_file),
        ("platform.client_key_file", p.client_key_file),
    ):
        if path is not None and not path.is_file():
            raise ConfigError(f"config: {key}: {path} is not a readable file")
    if tls_key is not None:
        identity = tls_key.identity
    else:
        identity = ClientIdentity(p.client_cert_file, p.client_key_file)
    try:
        check_tls_files(p.ca_file, identity)
    except TlsFilesError as exc:
        raise ConfigError(
            f"config: platform.ca_file/client_cert_file/client_key_file: unusable ({exc})"
        ) from None
    return CurlTransport(
        p, p.ca_file, identity, login=_gateway_login(p.gateway_login), key_faults=key_faults
    )


def _pseudonym_prf(config: ConsentConfig, hsm: HsmLink | None, keys: AuditKeys | None) -> KeyedPrf:
    """The pseudonym function of subjects and of every digest of personal data at rest: in the
    HSM with its ``pseudonym`` key (the audit trail's own object when the trail runs); without
    ``[hsm]`` (development only) HMAC-SM3 under ``consent.pseudonym_key_file`` (``Sidecar.started``
    then warns; not here: a start-up failure is one line)."""
    if keys is not None:
        return keys.pseudonyms
    if hsm is not None:
        try:
            return open_pseudonyms(hsm.token)
        except HsmError as exc:
            raise ConfigError(
                f"hsm: {exc} (pseudonyms: yibao-hsm keygen --purpose pseudonym)"
            ) from None
    if config.pseudonym_key_file is None:
        raise ConfigError(
            "config: consent.pseudonym_key_file: required without [hsm] (a file of 32+ hex digits)"
        )
    text = read_secret(config.pseudonym_key_file, "consent.pseudonym_key_file")
    try:
        return HostPrf(bytes.fromhex(text))
    except ValueError:
        raise ConfigError(
            "config: consent.pseudonym_key_file: must hold at least 32 hex digits"
        ) from None


def _msgids(settings: Settings, store: Store) -> tuple[SlotLease | None, MsgIds]:
    """Msgids from a configured slot, or from a slot leased in the shared store."""
    m, code = settings.platform.msgid, settings.institution.code
    if m.slot != "lease":  # the generator takes a slot, not [platform.msgid]: a lease's changes
        return None, MsgIdGenerator(code, slot=m.slot, slots=m.slots)
    lease = SlotLease(store, code, m)
    return lease, LeasedMsgIds(code, lease)


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


def _function_key(settings: Settings) -> bytes:
    """The secret behind page tokens and the cache's subject hashes: ``paging.token_key_file``
    (64 hex digits; tokens then survive restarts and work across replicas), else random."""
    path = settings.paging.token_key_file
    if path is None:
        return secrets.token_bytes(32)
    text = read_secret(path, "paging.token_key_file")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ConfigError(f"config: paging.token_key_file: {path} must hold 64 hex digits")
    return key


def _derived(key: bytes, purpose: bytes) -> bytes:
    return hmac.new(key, purpose, hashlib.sha256).digest()


def _mac_address() -> str:
    """This host's MAC address as sign-in reports it (``uuid.getnode``'s choice)."""
    node = uuid.getnode()
    return ":".join(f"{(node >> shift) & 0xFF:02X}" for shift in range(40, -1, -8))


def run(config_path: Path) -> int:
    """``yibao-sidecar serve`` on the event loop ``[server] event_loop`` names."""
    settings = config.load(config_path)
    factory = event_loop_factory(settings.server.event_loop)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(serve(config_path, settings))


async def serve(config_path: Path, settings: Settings | None = None) -> int:
    """Load (unless given), validate, build, run until SIGTERM, drain, close."""
    settings = settings if settings is not None else config.load(config_path)
    logs.configure(settings.log.level)
    try:
        versions.check_all()  # libraries whose private parts hsm/ uses: only tested versions
    except versions.UntestedVersion as exc:
        raise StartupError(f"yibao-sidecar: cannot start: {exc}") from None
    sidecar = build(settings)
    try:
        await sidecar.prepare()
    except StoreError as exc:
        await sidecar.close()
        raise StartupError(f"yibao-sidecar: cannot start: {exc}") from None
    try:
        if sidecar.probes is not None:  # first: the kubelet's startupProbe may already be asking
            await sidecar.probes.start()
        await serve_until_signalled(
            sidecar.server,
            on_stop=sidecar.close,
            on_signal=sidecar.draining,
            on_started=sidecar.started,
        )
    except OSError as exc:  # the socket path or port cannot be used
        await sidecar.close()
        raise StartupError(f"yibao-sidecar: cannot start: {exc}") from None
    return 0


class StartupError(Exception):
    """The sidecar could not start for a reason outside its configuration's syntax."""

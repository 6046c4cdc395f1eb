"""Configuration: one TOML file plus environment overrides, validated once at start-up.

An override is an environment variable ``YIBAO_SIDECAR__<SECTION>__<KEY>``; for example
``YIBAO_SIDECAR__SERVER__TCP_LISTEN=127.0.0.1:50051``. Validation uses pydantic, and every
problem is reported as one line naming the key (``server.max_message_bytes``) and where the
value came from.

Secrets never live in the configuration: PINs and private keys are read from the files that the
configuration names (``*_file`` keys). A key that looks like an inline secret is refused with a
message that says which ``*_file`` key to use instead.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

ENV_PREFIX = "YIBAO_SIDECAR__"
_SECRET_KEY = re.compile(r"(pin|password|secret|private_key|passphrase|token)$")


class ConfigError(Exception):
    """The configuration cannot be used; ``str()`` is one line that names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("must be HOST:PORT")
    return value


def _check_listen(value: str) -> str:
    _check_host_port(value)
    host = value.rpartition(":")[0]
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise ValueError("host must be a loopback IP address (127.0.0.1 or [::1])") from None
    if not address.is_loopback:
        raise ValueError("host must be a loopback IP address: callers outside the pod need mTLS")
    return value


def _check_health_listen(value: str) -> str:
    _check_host_port(value)
    try:
        ipaddress.ip_address(value.rpartition(":")[0].strip("[]"))
    except ValueError:
        raise ValueError("host must be an IP address, e.g. 0.0.0.0 for the kubelet") from None
    return value


class ServerTlsConfig(_Section):
    """Mutual TLS on the TCP listener: our certificate, and the CA that issues callers' ones."""

    cert_file: Path = Field(description="PEM: the sidecar's server certificate (and chain)")
    key_file: Path = Field(description="PEM: its private key")
    client_ca_file: Path = Field(description="PEM: CA certificates trusted to issue callers'")


class ServerConfig(_Section):
    """How IM services reach the sidecar."""

    socket_path: Path = Path("/run/yibao/sidecar.sock")
    socket_mode: int = Field(0o660, ge=0, le=0o777)
    tls: ServerTlsConfig | None = None
    tcp_plaintext_for_development: bool = False
    tcp_listen: Annotated[
        str | None, Field(description="HOST:PORT, optional; mutual TLS ([server.tls])")
    ] = None
    max_message_bytes: int = Field(1 << 20, ge=4096, le=64 << 20)
    max_concurrent_rpcs: int = Field(256, ge=1, le=100_000)
    grace_period_seconds: float = Field(10.0, ge=0, le=300)
    health_listen: Annotated[
        str | None, Field(description="plaintext HOST:PORT serving only grpc.health.v1 (probes)")
    ] = None
    health_check_interval_seconds: float = Field(10.0, gt=0, le=3600)
    readiness_includes_platform: bool = False
    tls_key_unusable_seconds: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="liveness NOT_SERVING (the kubelet restarts the container) once the TLS key "
        "in the token has failed every new handshake this long (docs/hsm.md, Session faults)",
    )
    event_loop: Literal["uvloop", "asyncio"] = Field(
        "uvloop", description="the event loop `serve` runs on (docs/performance.md: uvloop pays)"
    )

    @field_validator("tcp_listen")
    @classmethod
    def _mutual_tls_or_development(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value in (None, ""):
            return None
        assert value is not None
        if info.data.get("tls") is not None:
            return _check_host_port(value)
        _check_listen(value)  # plaintext: loopback only, and only when asked for
        if not info.data.get("tcp_plaintext_for_development"):
            raise ValueError(
                "TCP needs mutual TLS: configure [server.tls], or set "
                "server.tcp_plaintext_for_development = true (development only)"
            )
        return value

    @field_validator("health_listen")
    @classmethod
    def _health_address(cls, value: str | None) -> str | None:
        return None if value in (None, "") else _check_health_listen(value)


class InstitutionConfig(_Section):
    """Who the sidecar is to the platform (the envelope's institution fields)."""

    code: str = Field(pattern=r"^[A-Za-z0-9]{12}$", description="fixmedins_code")
    name: str = Field(min_length=1, max_length=200)
    division: str = Field(pattern=r"^[0-9]{6}$", description="mdtrtarea_admvs")
    receiver_system_code: str = Field("MBS_LOCAL", min_length=1, max_length=10)
    interface_version: str = Field("V1.0", min_length=1, max_length=6)
    operator_type: Literal["1", "2", "3"] = "3"
    sign_in_ip: str = Field("127.0.0.1", description="the IP address sign-in (9001) reports")

    @field_validator("sign_in_ip")
    @classmethod
    def _ip(cls, value: str) -> str:
        ipaddress.ip_address(value)
        return value


class TransactionCodes(_Section):
    """The platform's transaction codes, per region (a region's ``2501A`` is configuration).

    Defaults are the national codes of platform-protocol.md §4.
    """

    sign_in: str = "9001"
    sign_out: str = "9002"
    person_info: str = "1101"
    benefit_check: str = "2001"
    cumulative_info: str = "5206"
    designated_info: str = "5302"
    registration: str = "2501"
    registration_cancel: str = "2502"
    registration_query: str = "5304"
    account_statement: str = Field(
        "5307", description="regional personal-account statement; empty: the region has none"
    )
    outpatient_registration: str = "2201"
    fee_upload: str = "2204"
    pre_settlement: str = "2206"
    settlement: str = "2207"
    settlement_cancel: str = "2208"
    reversal: str = "2601"

    @field_validator("*")
    @classmethod
    def _shape(cls, value: str, info: ValidationInfo) -> str:
        if info.field_name == "account_statement" and value == "":
            return value
        if not re.fullmatch(r"[0-9]{4}[A-Z]?", value):
            raise ValueError("must be 4 digits, optionally followed by one capital letter")
        return value


class MsgIdConfig(_Section):
    """This replica's share of the msgid sequence space (see sidecar/platform/msgid.py).

    ``slot`` is a number unique per replica (StatefulSet ordinal), or ``"lease"``: take a slot
    from the shared store and keep it leased (Deployments; sidecar/platform/msgid_lease.py).
    """

    slots: int = Field(1, ge=1, le=100, description="how many replicas share the institution")
    slot: int | Literal["lease"] = Field(0, description='this replica\'s slot, or "lease"')
    lease_seconds: float = Field(30.0, ge=5, le=600, description='with slot = "lease"')
    renew_seconds: float = Field(10.0, gt=0, le=300, description="how often the lease is renewed")
    lease_safety_seconds: float = Field(
        5.0, ge=2, le=60, description="stop issuing this long before the lease could lapse"
    )

    @model_validator(mode="after")
    def _slot_in_range(self) -> MsgIdConfig:
        if self.slot == "lease":
            if self.renew_seconds >= self.lease_seconds - self.lease_safety_seconds:
                raise ValueError("renew_seconds must be below lease_seconds - lease_safety_seconds")
        elif not 0 <= self.slot < self.slots:
            raise ValueError(f'slot must be below slots ({self.slots}), or be "lease"')
        return self


class ResilienceConfig(_Section):
    """Retries for queries, the circuit breaker, and the bound on requests in flight."""

    retry_attempts: int = Field(3, ge=1, le=10)
    retry_initial_backoff_seconds: float = Field(0.1, gt=0, le=10)
    retry_max_backoff_seconds: float = Field(1.0, gt=0, le=60)
    breaker_failure_threshold: int = Field(5, ge=1, le=1000)
    breaker_open_seconds: float = Field(30.0, gt=0, le=3600)
    max_in_flight: int = Field(64, ge=1, le=10_000)


class MessageSecurityConfig(_Section):
    """Which of the platform's message-security schemes this gateway speaks, and its keys.

    Our SM2 signatures are made in the HSM (``[hsm]``); the platform's are verified with its public
    key, taken preferably from its signing certificate checked against the platform CA
    (``platform_certificate_file`` with ``platform_ca_file``), else from a configured raw key
    (``platform_public_key_file``); exactly one of the two ways. Secrets (the scheme-A SM4 key,
    the scheme-B appSecret) are read from files.
    """

    scheme: Literal["plain", "envelope-signature", "mobile-payment"] = "plain"
    platform_public_key_file: Path | None = Field(
        None, description="the platform's SM2 public key: PEM, or hex/Base64 of 04||X||Y"
    )
    platform_certificate_file: Path | None = Field(
        None,
        description="the platform's SM2 signing certificate (PEM), optionally followed by "
        "intermediate CA certificates; preferred to platform_public_key_file",
    )
    platform_ca_file: Path | None = Field(
        None, description="PEM bundle of the CA certificates trusted to issue it"
    )
    user_id: str = Field("1234567812345678", min_length=1, max_length=8191)
    signature_encoding: Literal["raw", "der"] = "raw"
    sm4_key_file: Path | None = Field(None, description="scheme A: file with 32 hex digits")
    app_id: str | None = Field(None, min_length=16, max_length=64, description="scheme B")
    app_secret_file: Path | None = Field(None, description="scheme B: file with the appSecret")
    user_id_from_app_secret: bool = False

    @model_validator(mode="after")
    def _keys_for_the_scheme(self) -> MessageSecurityConfig:
        needed: dict[str, tuple[str, ...]] = {
            "plain": (),
            "envelope-signature": ("sm4_key_file",),
            "mobile-payment": ("app_id", "app_secret_file"),
        }
        missing = [key for key in needed[self.scheme] if getattr(self, key) is None]
        if self.scheme != "plain":
            certificate = ("platform_certificate_file", "platform_ca_file")
            if any(getattr(self, key) is not None for key in certificate):
                if self.platform_public_key_file is not None:
                    raise ValueError(
                        "configure the platform's key one way: platform_certificate_file with "
                        "platform_ca_file, or platform_public_key_file, not both"
                    )
                missing[:0] = [key for key in certificate if getattr(self, key) is None]
            elif self.platform_public_key_file is None:
                # the message for neither way keeps its old wording (start-up tests pin it)
                missing.insert(0, "platform_public_key_file")
        if missing:
            raise ValueError(f"scheme {self.scheme} needs {', '.join(missing)}")
        return self


class GatewayLoginConfig(_Section):
    """An access gateway in front of the platform (platform-protocol.md §1), if there is one."""

    scheme: Literal["none", "oauth2-password"] = "none"
    token_url: str | None = Field(None, pattern=r"^https://")
    client_id: str | None = Field(None, min_length=1, max_length=200)
    client_secret_file: Path | None = None
    username: str | None = Field(None, min_length=1, max_length=200)
    password_file: Path | None = None

    @model_validator(mode="after")
    def _complete(self) -> GatewayLoginConfig:
        if self.scheme == "oauth2-password":
            keys = ("token_url", "client_id", "client_secret_file", "username", "password_file")
            missing = [key for key in keys if getattr(self, key) is None]
            if missing:
                raise ValueError(f"oauth2-password needs {', '.join(missing)}")
        return self


class PlatformConfig(_Section):
    """The platform gateway and the mutually authenticated TLS tunnel to it."""

    url: str = Field(pattern=r"^https://", description="gateway base URL")
    path: str = Field("/fsi/api/rsfComIfsService/callService", pattern=r"^/")
    ca_file: Path
    client_cert_file: Path
    client_key_file: Path | None = Field(
        None, description="PEM private key file: development only (prod: client_key)"
    )
    client_key: str | None = Field(
        None,
        pattern=r"^token:tls(/[0-9]{4}-[0-9]{2}(\.[0-9]+)?)?$",
        description='"token:tls": the newest tls/<version> key in the [hsm] token (or '
        '"token:tls/<version>"), used through OpenSSL\'s pkcs11 engine',
    )
    timeout_seconds: float = Field(20.0, gt=0, le=120)
    connect_timeout_seconds: float = Field(5.0, gt=0, le=60)
    transport: Literal["curl"] = Field(
        "curl",
        description='the tunnel\'s HTTP client: "curl" (libcurl through pycurl), the only one',
    )
    http2: bool = True
    max_connections: int = Field(20, ge=1, le=1000)
    pinned_server_keys: tuple[str, ...] = Field(
        (), description="SHA-256 hex of the gateway's SubjectPublicKeyInfo; empty: no pinning"
    )

    @model_validator(mode="after")
    def _one_client_key(self) -> PlatformConfig:
        if (self.client_key_file is None) == (self.client_key is None):
            raise ValueError(
                'name the TLS client key one way: client_key = "token:tls" (the HSM) or '
                "client_key_file (development), not both nor neither"
            )
        return self

    @field_validator("transport", mode="before")
    @classmethod
    def _curl_only(cls, value: object) -> object:
        if value == "httpx":
            raise ValueError(
                'the httpx tunnel was removed: libcurl is the only one; set transport = "curl" '
                "or delete the key"
            )
        return value

    @field_validator("pinned_server_keys")
    @classmethod
    def _pins_are_sha256(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pin in value:
            if not re.fullmatch(r"[0-9a-fA-F]{64}", pin):
                raise ValueError("each pin must be 64 hex digits (SHA-256 of the key's SPKI)")
        return value

    sign_in_expired_messages: tuple[str, ...] = ("签到信息已失效",)
    person_not_found_messages: tuple[str, ...] = Field(
        ("未查询到", "姓名与证件号码不匹配", "人员信息不存在"),
        description="1101 refusal texts that mean no such person (PERSON_NOT_FOUND in every "
        "function; the platform has no code for it)",
    )
    freshness_window_seconds: float = Field(
        300.0, ge=1, le=86_400, description="answers with respond_time further off are refused"
    )
    transactions: TransactionCodes = Field(default_factory=TransactionCodes)
    resilience: ResilienceConfig = Field(default_factory=ResilienceConfig)
    msgid: MsgIdConfig = Field(default_factory=MsgIdConfig)
    security: MessageSecurityConfig = Field(default_factory=MessageSecurityConfig)
    gateway_login: GatewayLoginConfig = Field(default_factory=GatewayLoginConfig)


class HsmConfig(_Section):
    """The PKCS#11 HSM holding the signing key (optional until message security is on)."""

    module: Path = Field(description="the vendor's PKCS#11 library")
    token_label: str = Field(min_length=1, max_length=32)
    profile: str = Field("softhsm-sm", description="mechanism profile, hsm/profiles/*.toml")
    user_pin_file: Path = Field(description="file holding the user PIN, mode 0600 or stricter")
    pool_size: int = Field(2, ge=1, le=64)
    tls_token_label: str | None = Field(
        None, min_length=1, max_length=32,
        description="token of platform.client_key when not token_label (same module and PIN)",
    )  # fmt: skip


class OtlpConfig(_Section):
    """OTLP export of spans and metrics to a collector; off while ``endpoint`` is unset.

    ``endpoint`` is the collector's base URL: ``http://collector:4318`` for ``http/protobuf``
    (``/v1/traces`` and ``/v1/metrics`` are appended), ``http://collector:4317`` for ``grpc``.
    Headers that carry credentials come from ``headers_file`` (``name=value`` per line).
    """

    endpoint: str | None = Field(None, pattern=r"^https?://")
    protocol: Literal["http/protobuf", "grpc"] = "http/protobuf"
    headers: dict[str, str] = Field(
        default_factory=dict, description="headers without credentials (see headers_file)"
    )
    headers_file: Path | None = Field(None, description="credential headers, name=value per line")
    ca_file: Path | None = Field(None, description="CA bundle for an https endpoint")
    timeout_seconds: float = Field(10.0, gt=0, le=120)
    traces: bool = True
    metrics: bool = True
    metrics_interval_seconds: float = Field(15.0, ge=1, le=3600)

    @field_validator("headers")
    @classmethod
    def _no_credentials_inline(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if re.search(r"(?i)auth|token|key|secret|password|cookie|credential", name):
                raise ValueError(f"header {name} looks like a credential: put it in headers_file")
        return value


class PrometheusConfig(_Section):
    """A Prometheus scrape endpoint (``GET /metrics``); off while ``listen`` is unset."""

    listen: str | None = Field(None, description="HOST:PORT, e.g. 0.0.0.0:9464")

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        return None if value in (None, "") else _check_host_port(value)


class TelemetryConfig(_Section):
    """Where spans and metrics go (docs/metrics.md lists every metric)."""

    trace_sample_ratio: float = Field(
        1.0, ge=0, le=1, description="root spans sampled; a caller's sampled flag is followed"
    )
    otlp: OtlpConfig = Field(default_factory=OtlpConfig)
    prometheus: PrometheusConfig = Field(default_factory=PrometheusConfig)


class CacheConfig(_Section):
    """The short-lived in-memory cache of read-only answers (enrollment, account, eligibility)."""

    ttl_seconds: float = Field(0.0, ge=0, le=3600, description="0: no cache")
    max_entries: int = Field(10_000, ge=1, le=1_000_000)


class OffsiteConfig(_Section):
    """Policy for cross-region treatment registrations (异地就医备案)."""

    max_backdate_days: int = Field(
        0, ge=0, le=366, description="how far in the past a start date may lie (补备案)"
    )
    request_lease_seconds: float = Field(
        120.0, gt=0, le=3600, description="a running request_id blocks repeats this long"
    )
    keep_request_ids_hours: float = Field(
        168.0, ge=24, le=24 * 366, description="finished request_ids are remembered this long"
    )
    unknown_outcome_settle_seconds: float = Field(
        60.0,
        ge=0,
        le=86_400,
        description="after this long a lost 2501 the query cannot find counts as not made",
    )


class PagingConfig(_Section):
    """Page tokens are MACed; without a key file each process draws its own key."""

    token_key_file: Path | None = Field(None, description="file with 64 hex digits, optional")


class AccessConfig(_Section):
    """Caller access control (docs/security.md): who may call, for which tenants, how often."""

    policy_file: Path = Field(description="TOML: callers, their tenants, RPCs and rates")
    reload_interval_seconds: float = Field(
        5.0, ge=0, le=3600, description="how often a call checks whether the file changed"
    )
    private_socket_parent: Path | None = Field(
        None,
        description="where the 0700 directory of gRPC's private socket is made "
        "(default: the system's temporary directory)",
    )


class StoreConfig(_Section):
    """The shared store: SQLite on one machine, PostgreSQL when many replicas share it."""

    backend: Literal["sqlite", "postgresql"] = "sqlite"
    sqlite_path: Path = Path("/var/lib/yibao/sidecar.db")
    postgresql_dsn: str | None = Field(
        None, description="libpq conninfo or URI without the password, e.g. host=db dbname=yibao"
    )
    postgresql_password_file: Path | None = None
    pool_size: int = Field(4, ge=1, le=100)
    connect_timeout_seconds: float = Field(5.0, gt=0, le=60)

    @field_validator("postgresql_dsn")
    @classmethod
    def _no_inline_password(cls, value: str | None) -> str | None:
        if value is not None and re.search(r"password\s*=|://[^/@]*:[^/@]*@", value):
            raise ValueError("must not carry a password: use store.postgresql_password_file")
        return value

    @model_validator(mode="after")
    def _dsn_for_postgresql(self) -> StoreConfig:
        if self.backend == "postgresql" and not self.postgresql_dsn:
            raise ValueError("backend postgresql needs store.postgresql_dsn")
        return self


class AuditConfig(_Section):
    """The audit trail (sidecar/audit, docs/audit.md); it needs ``[hsm]`` for its keys."""

    instance: str = Field(
        "sidecar", pattern=r"^[A-Za-z0-9._-]{1,64}$", description="names this replica's chains"
    )
    chain_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._/-]{1,128}$",
        description="fixed chain id; default: <instance>/<start time>-<random>, one per start",
    )
    checkpoint_interval_seconds: float = Field(60.0, ge=0.1, le=86_400)
    checkpoint_every_records: int = Field(
        1000, ge=1, le=1_000_000, description="also sign a checkpoint after this many records"
    )
    spool_dir: Path = Path("/var/lib/yibao/audit-spool")
    durability: Literal["store", "journal"] = Field(
        "store",
        description="what a transaction intent waits for: a store commit, or the local journal's"
        " group fdatasync in spool_dir (shipped to the store in the background)",
    )
    journal_segment_mib: int = Field(
        16, ge=1, le=1024, description="size of a journal file (written over zeros, made ahead)"
    )
    replay_interval_seconds: float = Field(1.0, gt=0, le=3600)
    commit_delay_seconds: float = Field(
        0.02, ge=0, le=1, description="outcomes wait this long to share a commit (group commit)"
    )
    key_rotation_seconds: float = Field(86_400.0, ge=1, le=31 * 86_400)
    retention_days: int = Field(730, ge=730, le=36_500, description="two years at least")


class SettlementConfig(_Section):
    """电子凭证结算: timing of the state machine (docs/settlement.md) and second confirmation."""

    default_budget_seconds: float = Field(
        90.0, gt=0, le=600, description="the whole chain's budget when the caller set no deadline"
    )
    resolve_reserve_seconds: float = Field(
        5.0, ge=0, le=60, description="kept from the deadline to reverse a lost 2207 answer"
    )
    late_arrival_seconds: float = Field(
        60.0, ge=0, le=3600, description="2601 'not found' is final only this long after 2207"
    )
    resolver_interval_seconds: float = Field(10.0, gt=0, le=3600)
    resolver_min_age_seconds: float = Field(5.0, ge=0, le=3600)
    second_confirmation: dict[str, Literal["sms_code", "dynamic_token"]] = Field(
        default_factory=dict,
        description="division code (2, 4 or 6 digits) -> what its platform demands in 2207",
    )
    reversal_not_found_messages: tuple[str, ...] = ("原交易不存在或未成功",)
    reversal_done_messages: tuple[str, ...] = ("原交易已冲正或已撤销",)
    cancellation_done_messages: tuple[str, ...] = ("已撤销",)
    voucher_mismatch_messages: tuple[str, ...] = ("就诊凭证编号与证件号码不一致",)

    @field_validator("second_confirmation")
    @classmethod
    def _division_keys(
        cls, value: dict[str, Literal["sms_code", "dynamic_token"]]
    ) -> dict[str, Literal["sms_code", "dynamic_token"]]:
        for key in value:
            if not re.fullmatch(r"[0-9]{2}|[0-9]{4}|[0-9]{6}", key):
                raise ValueError(f"{key!r} is not a division code of 2, 4 or 6 digits")
        return value


class ConsentConfig(_Section):
    """The consent ledger (sidecar/compliance/)."""

    pseudonym_key_file: Path | None = Field(
        None,
        description="development without [hsm] only: a file with a host-held HMAC-SM3 key "
        "(hex, 32+ digits) for pseudonyms and digests of personal data; with [hsm] the token's "
        "pseudonym key is used and this key is not needed",
    )


class LogConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class Settings(_Section):
    """The whole validated configuration."""

    server: ServerConfig = Field(default_factory=ServerConfig)
    institution: InstitutionConfig
    platform: PlatformConfig
    hsm: HsmConfig | None = None
    cache: CacheConfig = Field(default_factory=CacheConfig)
    offsite: OffsiteConfig = Field(default_factory=OffsiteConfig)
    paging: PagingConfig = Field(default_factory=PagingConfig)
    access: AccessConfig | None = None
    store: StoreConfig = Field(default_factory=StoreConfig)
    audit: AuditConfig | None = None
    settlement: SettlementConfig = Field(default_factory=SettlementConfig)
    consent: ConsentConfig = Field(default_factory=ConsentConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)

    @model_validator(mode="after")
    def _signing_needs_the_hsm(self) -> Settings:
        if self.platform.security.scheme != "plain" and self.hsm is None:
            raise ValueError(
                f"platform.security.scheme {self.platform.security.scheme} signs with the HSM: "
                "configure [hsm]"
            )
        if self.audit is not None and self.hsm is None:
            raise ValueError("the audit trail keeps its keys in the HSM: configure [hsm]")
        if self.platform.client_key is not None and self.hsm is None:
            raise ValueError(
                f'platform.client_key = "{self.platform.client_key}" is a key in the HSM: '
                "configure [hsm]"
            )
        return self


def load(path: Path | None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read ``path`` (if given), apply environment overrides, validate, or raise ConfigError."""
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with path.open("rb") as handle:
                data = tomllib.load(handle)
        except OSError as exc:
            raise ConfigError(f"config: cannot read {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config: {path} is not valid TOML: {exc}") from None
    origins: dict[str, str] = {}
    for name, value in sorted(environ.items()):
        if name.startswith(ENV_PREFIX):
            keys = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
            dotted = ".".join(keys)
            if not all(keys):
                raise ConfigError(
                    f"config: environment {name}: not a key; the form is "
                    f"{ENV_PREFIX}<SECTION>__<KEY>, e.g. {ENV_PREFIX}SERVER__SOCKET_PATH"
                )
            if value == "" and not _accepts_empty(keys):
                raise ConfigError(
                    f"config: {dotted} (from environment {name}): the variable is empty; "
                    "unset it to keep the file's value or the default"
                )
            _set_nested(data, keys, value)
            origins[dotted] = f"environment {name}"
    _refuse_inline_secrets(data, origins, path)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, origins, path)) from None


def read_secret(path: Path, key: str) -> str:
    """The secret in the file that configuration key ``key`` names; ConfigError naming the key."""
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise ConfigError(f"config: {key}: cannot read {path}: {reason}") from None


def _set_nested(data: dict[str, Any], keys: list[str], value: str) -> None:
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[keys[-1]] = value


def _refuse_inline_secrets(
    data: Mapping[str, Any], origins: Mapping[str, str], path: Path | None, prefix: str = ""
) -> None:
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            _refuse_inline_secrets(value, origins, path, dotted + ".")
        elif _SECRET_KEY.search(key):
            where = origins.get(dotted, str(path))
            raise ConfigError(
                f"config: {dotted} (from {where}): secrets are not accepted in the configuration; "
                f"put the secret in a file and name it with {dotted}_file"
            )


def _one_line(exc: ValidationError, origins: Mapping[str, str], path: Path | None) -> str:
    errors = exc.errors()
    # A misspelt key also makes the real one "missing": the unknown key is the news.
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = tuple(str(part) for part in first["loc"])
    dotted = ".".join(loc) or "(whole file)"
    where = _origin(dotted, origins, path)
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown key"
        known = _known_keys(loc[:-1])
        close = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.6) if loc else []
        if close:
            message += f" (did you mean {close[0]}?)"
    elif first["type"] == "missing":
        message = "required key is missing"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"config: {dotted} (from {where}): {message}{more}"


def _origin(dotted: str, origins: Mapping[str, str], path: Path | None) -> str:
    """Where ``dotted`` came from: its environment variable, the variable that made the section
    (a misspelt section that only the environment names), else the file."""
    if dotted in origins:
        return origins[dotted]
    below = sorted(origin for key, origin in origins.items() if key.startswith(dotted + "."))
    if below:
        return ", ".join(below)
    return str(path) if path else "defaults"


def _section_at(keys: Sequence[str]) -> type[BaseModel] | None:
    """The section class that ``keys`` (e.g. ``("platform", "msgid")``) names, if any."""
    model: type[BaseModel] = Settings
    for key in keys:
        field = model.model_fields.get(key)
        if field is None:
            return None
        sections = [
            arg
            for arg in (field.annotation, *get_args(field.annotation))
            if isinstance(arg, type) and issubclass(arg, BaseModel)
        ]
        if not sections:
            return None
        model = sections[0]
    return model


def _known_keys(keys: Sequence[str]) -> list[str]:
    model = _section_at(keys)
    return list(model.model_fields) if model is not None else []


def _accepts_empty(keys: Sequence[str]) -> bool:
    """Whether an empty environment value can mean something for this key: a text key (its
    validator decides, e.g. an optional listen address or a region without a statement)."""
    model = _section_at(keys[:-1])
    field = model.model_fields.get(keys[-1]) if model is not None else None
    if field is None:
        return True  # an unknown key: validation names it
    annotation = field.annotation
    return annotation is str or str in get_args(annotation)

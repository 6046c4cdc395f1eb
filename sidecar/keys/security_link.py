"""Builds the configured message security: our signer in the HSM, the platform's key on the host.

``[platform.security]`` names the scheme and where its key material lives; this module reads the
files, checks them (a wrong key fails at start-up with the key's name, never at the first
request), and returns the ``Sealing`` the platform client uses.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from hsm.errors import HsmError
from hsm.sm.signature import SignatureEncoding
from hsm.sm.sm2 import HostSm2Verifier, Sm2PublicKey
from hsm.sm2 import Sm2Signer as HsmSigner
from sidecar.config import ConfigError, MessageSecurityConfig, read_secret
from sidecar.observability import instruments
from sidecar.platform.certificates import CertificateRefused, load_platform_key
from sidecar.platform.sealing import EnvelopeSignature, MobilePayment, Plain, Sealing
from sidecar.platform.security.errors import SecurityError
from sidecar.platform.security.scheme_a import SchemeA, SchemeAConfig
from sidecar.platform.security.scheme_b import SchemeB, SchemeBConfig

KEY = "platform.security"


class HsmSm2Signer:
    """The ``Sm2Signer`` seam of the security layer, signing in the HSM (raw r || s).

    Each signature gets an ``hsm sign`` span (a child of the platform transaction's) and its
    latency, queueing for a pool session included, in ``yibao.hsm.duration``.
    """

    def __init__(
        self,
        signer: HsmSigner,
        *,
        tracer: trace.Tracer | None = None,
        meter: metrics.Meter | None = None,
    ) -> None:
        self._signer = signer
        self._tracer = tracer or trace.NoOpTracer()
        meter = meter or metrics.NoOpMeter("yibao-sidecar")
        self._duration = instruments.duration(
            meter, instruments.HSM_DURATION, "HSM operation latency, pool queueing included"
        )

    async def sign(self, message: bytes) -> bytes:
        started = time.perf_counter()
        outcome = "ok"
        with self._tracer.start_as_current_span(
            "hsm sign",
            kind=SpanKind.INTERNAL,
            attributes={"yibao.hsm.operation": "sign", "yibao.hsm.algorithm": "SM2"},
            record_exception=False,  # an HSM error's text is not for traces
            set_status_on_exception=False,
        ) as span:
            try:
                signature = await self._signer.sign(message)
            except BaseException as exc:
                outcome = "error"
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise
            finally:
                elapsed = instruments.elapsed_seconds(started, time.perf_counter())
                self._duration.record(elapsed, {"operation": "sign", "outcome": outcome})
        return signature.to_raw()


def build_sealing(
    config: MessageSecurityConfig,
    signer: HsmSigner | None,
    *,
    tracer: trace.Tracer | None = None,
    meter: metrics.Meter | None = None,
) -> Sealing:
    if config.scheme == "plain":
        return Plain()
    if signer is None:  # the settings validator already demands [hsm]
        raise ConfigError(f"config: {KEY}.scheme {config.scheme} needs [hsm]")
    try:
        ours = HsmSm2Signer(signer, tracer=tracer, meter=meter)
        user_id = config.user_id.encode()
        encoding = SignatureEncoding(config.signature_encoding)
        platform_key = _platform_key(config)
        if config.scheme == "envelope-signature":
            assert config.sm4_key_file is not None
            sm4_key = _hex_key(config.sm4_key_file, "sm4_key_file")
            peer = HostSm2Verifier(platform_key, user_id=user_id)
            return EnvelopeSignature(
                SchemeA(sm4_key, ours, peer, SchemeAConfig(signature_encoding=encoding))
            )
        assert config.app_id is not None
        assert config.app_secret_file is not None
        scheme_b = SchemeBConfig(
            app_id=config.app_id,
            app_secret=_secret(config.app_secret_file, "app_secret_file"),
            user_id=user_id,
            user_id_from_app_secret=config.user_id_from_app_secret,
            signature_encoding=encoding,
        )
        peer = HostSm2Verifier(platform_key, user_id=scheme_b.sm2_user_id())
        return MobilePayment(SchemeB(scheme_b, ours, peer))
    except (SecurityError, HsmError, ValueError) as exc:
        raise ConfigError(f"config: {KEY}: {exc}") from None


def _platform_key(config: MessageSecurityConfig) -> Sm2PublicKey:
    """From the certificate checked against the CA (preferred), else from the raw key."""
    if config.platform_certificate_file is None:
        assert config.platform_public_key_file is not None
        return _public_key(config.platform_public_key_file)
    assert config.platform_ca_file is not None
    key = "platform_certificate_file"
    certificate = _read_bytes(config.platform_certificate_file, key)
    trust_anchors = _read_bytes(config.platform_ca_file, "platform_ca_file")
    try:
        return load_platform_key(certificate, trust_anchors, now=datetime.now(UTC))
    except CertificateRefused as exc:
        raise ConfigError(f"config: {KEY}.{key}: {exc}") from None


def _read_bytes(path: Path, key: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"config: {KEY}.{key}: cannot read {path}: {exc.strerror}") from None


def _public_key(path: Path) -> Sm2PublicKey:
    text = _secret(path, "platform_public_key_file")
    if "BEGIN PUBLIC KEY" in text:
        from hsm.sm.sm2 import Sm2PublicKey as HsmPublicKey

        point = HsmPublicKey.from_pem(text).uncompressed()
        return Sm2PublicKey.from_bytes(point)
    compact = "".join(text.split())
    try:
        return Sm2PublicKey.from_bytes(bytes.fromhex(compact))
    except ValueError:
        return Sm2PublicKey.from_base64(compact)


def _hex_key(path: Path, key: str) -> bytes:
    try:
        value = bytes.fromhex(_secret(path, key).strip())
    except ValueError:
        raise ConfigError(f"config: {KEY}.{key}: {path} does not hold hex digits") from None
    if len(value) != 16:
        raise ConfigError(f"config: {KEY}.{key}: {path} must hold 32 hex digits (16 bytes)")
    return value


def _secret(path: Path, key: str) -> str:
    return read_secret(path, f"{KEY}.{key}")

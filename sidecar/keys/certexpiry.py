"""Days until the sidecar's own certificates expire: logged at start-up and kept as a gauge.

Two certificates matter: the TLS client certificate the gateway checks on every connection
(``platform.client_cert_file``, the leaf is the first certificate of the PEM file), and the
certificate of the active SM2 signing key, which ``yibao-hsm import-cert`` stores in the token
next to the key (absent until the security team imports it; then there is nothing to watch).

The gauge ``yibao.certificate.expiry`` (unit ``d``, attribute ``certificate``: ``tls_client`` or
``signing``) is negative once a certificate has expired. Only the role and the date are logged:
subjects are the institution's, but nothing here needs them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from asn1crypto import pem, x509  # type: ignore[import-untyped]
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from hsm.errors import HsmError, NotFound
from hsm.keys import KeyStore
from hsm.token import HsmToken

log = logging.getLogger(__name__)

SOON_DAYS = 30
SECONDS_PER_DAY = 86_400


class CertificateUnreadable(Exception):
    """The file or token object is not an X.509 certificate."""


@dataclass(frozen=True)
class Expiry:
    """When one of our certificates stops being valid."""

    role: str
    not_after: datetime

    def days_left(self, now: datetime) -> float:
        return (self.not_after - now).total_seconds() / SECONDS_PER_DAY


def from_der(role: str, der: bytes) -> Expiry:
    try:
        certificate = x509.Certificate.load(der)
        not_after = certificate["tbs_certificate"]["validity"]["not_after"].native
    except (ValueError, TypeError, KeyError):
        raise CertificateUnreadable(f"the {role} certificate is not DER X.509") from None
    if not isinstance(not_after, datetime):
        raise CertificateUnreadable(f"the {role} certificate has no expiry date")
    return Expiry(role, not_after.astimezone(UTC))


def from_pem_file(role: str, path: Path) -> Expiry:
    """The leaf (first certificate) of a PEM file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CertificateUnreadable(f"cannot read {path}: {exc.strerror}") from None
    if pem.detect(data):
        for kind, _, der in pem.unarmor(data, multiple=True):
            if kind == "CERTIFICATE":
                return from_der(role, der)
        raise CertificateUnreadable(f"{path} holds no CERTIFICATE block")
    return from_der(role, data)


def signing_certificate(token: HsmToken, label: str) -> Expiry | None:
    """The certificate stored in the token for key ``label``, or None if none was imported."""
    try:
        der = KeyStore(token).certificate(label)
    except NotFound:
        return None
    except HsmError as exc:
        raise CertificateUnreadable(f"cannot read the certificate of {label}: {exc}") from None
    return from_der("signing", der)


class CertificateWatch:
    """Logs each certificate's remaining days once and reports the seconds left as a gauge."""

    def __init__(
        self,
        certificates: Sequence[Expiry],
        meter: metrics.Meter | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.certificates = tuple(certificates)
        self._clock = clock
        meter = meter or metrics.NoOpMeter("yibao-sidecar")
        meter.create_observable_gauge(
            "yibao.certificate.expiry",
            callbacks=[self._observe],
            unit="s",
            description="seconds until the certificate expires (negative: expired)",
        )

    def log_remaining(self) -> None:
        now = self._clock()
        for certificate in self.certificates:
            days = certificate.days_left(now)
            level = logging.INFO
            if days < 0:
                level = logging.ERROR
            elif days < SOON_DAYS:
                level = logging.WARNING
            log.log(
                level,
                "certificate.expiry",
                extra={
                    "certificate": certificate.role,
                    "not_after": certificate.not_after.isoformat(),
                    "days_left": round(days, 1),
                },
            )

    def _observe(self, _: CallbackOptions) -> list[Observation]:
        now = self._clock()
        return [
            Observation(round(c.days_left(now) * SECONDS_PER_DAY), {"certificate": c.role})
            for c in self.certificates
        ]

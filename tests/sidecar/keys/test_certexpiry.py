"""Days left on our certificates: read from PEM or DER, logged by urgency, reported as a gauge."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from sidecar.keys import certexpiry
from sidecar.observability import logs

NOW = dt.datetime(2026, 11, 26, 8, 0, tzinfo=dt.UTC)


def certificate(not_after: dt.datetime, name: str = "leaf") -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_after - dt.timedelta(days=365))
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )


def pem(*certificates: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def test_the_leaf_of_a_pem_chain_is_read(tmp_path: Path) -> None:
    leaf = certificate(NOW + dt.timedelta(days=10, hours=12))
    issuer = certificate(NOW + dt.timedelta(days=3000), "ca")
    path = tmp_path / "client.pem"
    path.write_bytes(pem(leaf, issuer))
    expiry = certexpiry.from_pem_file("tls_client", path)
    assert expiry.not_after == NOW + dt.timedelta(days=10, hours=12)
    assert expiry.days_left(NOW) == pytest.approx(10.5)


def test_a_der_file_is_read_too(tmp_path: Path) -> None:
    path = tmp_path / "client.der"
    path.write_bytes(certificate(NOW).public_bytes(serialization.Encoding.DER))
    assert certexpiry.from_pem_file("tls_client", path).days_left(NOW) == 0


@pytest.mark.parametrize(
    "content",
    [b"", b"not a certificate", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"],
)
def test_anything_else_is_refused_by_name(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "client.pem"
    path.write_bytes(content)
    with pytest.raises(certexpiry.CertificateUnreadable):
        certexpiry.from_pem_file("tls_client", path)


def test_a_missing_file_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(certexpiry.CertificateUnreadable, match=r"absent\.pem"):
        certexpiry.from_pem_file("tls_client", tmp_path / "absent.pem")


def test_remaining_days_are_logged_with_their_urgency(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("INFO")
    watch = certexpiry.CertificateWatch(
        [
            certexpiry.Expiry("tls_client", NOW + dt.timedelta(days=200)),
            certexpiry.Expiry("signing", NOW + dt.timedelta(days=12)),
            certexpiry.Expiry("old", NOW - dt.timedelta(days=1)),
        ],
        clock=lambda: NOW,
    )
    watch.log_remaining()
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    levels = {line["certificate"]: (line["level"], line["days_left"]) for line in lines}
    assert levels == {
        "tls_client": ("info", 200.0),
        "signing": ("warning", 12.0),
        "old": ("error", -1.0),
    }
    logging.getLogger().handlers.clear()


def test_the_gauge_reports_seconds_left_per_certificate() -> None:
    reader = InMemoryMetricReader()
    certexpiry.CertificateWatch(
        [
            certexpiry.Expiry("tls_client", NOW + dt.timedelta(days=45)),
            certexpiry.Expiry("signing", NOW + dt.timedelta(days=29, hours=6)),
        ],
        MeterProvider(metric_readers=[reader]).get_meter("test"),
        clock=lambda: NOW,
    )
    data = reader.get_metrics_data()
    assert data is not None
    (metric,) = [m for r in data.resource_metrics for s in r.scope_metrics for m in s.metrics]
    assert (metric.name, metric.unit) == ("yibao.certificate.expiry", "s")
    points = {p.attributes["certificate"]: p.value for p in metric.data.data_points}
    assert points == {"tls_client": 45 * 86_400, "signing": 29 * 86_400 + 6 * 3_600}

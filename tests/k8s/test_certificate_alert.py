"""The certificate-expiry alerts fire on the sidecar's own scrape output, and the dev PKI's don't.

The rules in k8s/components/monitoring compare the gauge the sidecar exports
(sidecar/keys/certexpiry.py, seconds left) with a number of days written in seconds. Here a
certificate that expires in a few days (made in the test) goes through the real exposition (the
OpenTelemetry Prometheus reader, as ``[telemetry.prometheus]`` serves it), and each expiry rule's
comparison is evaluated on the scraped samples: it must fire. The development PKI's client
certificate (what ``make demo`` and a sandbox run with) must not make any of them fire, for as
long as the dev kit reuses it.
"""

from __future__ import annotations

import datetime as dt
import operator
from collections.abc import Callable
from pathlib import Path
from typing import Any

import promql_parser
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sidecar.keys import certexpiry
from tests.k8s.test_monitoring import alert_rules, selected_metrics
from yibao_devkit import devcerts


def expiry_rules() -> list[dict[str, Any]]:
    rules = [rule for rule in alert_rules() if "expir" in rule["alert"].lower()]
    assert len(rules) >= 2, "the warning and the critical certificate-expiry alerts"
    return rules


def short_lived(path: Path, days: float) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "yibao-sidecar-dev")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def scrape(client_cert: Path) -> str:
    """What the sidecar's /metrics shows for a TLS client certificate."""
    registry = CollectorRegistry(auto_describe=True)
    provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)])
    try:
        certexpiry.CertificateWatch(
            [certexpiry.from_pem_file("tls_client", client_cert)], provider.get_meter("test")
        )
        return generate_latest(registry).decode()
    finally:
        provider.shutdown()


ARITHMETIC: dict[str, Callable[[float, float], float]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
}


def constant(node: Any) -> float:
    """A threshold written as constant arithmetic (``30 * 86400``), evaluated as Prometheus does."""
    if isinstance(node, promql_parser.NumberLiteral):
        return float(node.val)
    if isinstance(node, promql_parser.ParenExpr):
        return constant(node.expr)
    assert isinstance(node, promql_parser.BinaryExpr), f"not a constant: {node}"
    return ARITHMETIC[str(node.op)](constant(node.lhs), constant(node.rhs))


def fires(expr: str, exposition: str) -> bool:
    """``<aggregation>(<gauge>) < N`` evaluated on the scraped samples of one pod."""
    tree = promql_parser.parse(expr)
    assert isinstance(tree, promql_parser.BinaryExpr) and str(tree.op) == "<", expr
    threshold = constant(tree.rhs)
    (metric,) = selected_metrics(expr)
    values = [
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == metric
    ]
    assert values, f"the sidecar exports no {metric}: the rule watches nothing"
    return min(values) < threshold


@pytest.mark.parametrize("days", [5.0, -1.0])  # about to expire; already expired
def test_every_expiry_alert_fires_for_a_certificate_about_to_expire(
    tmp_path: Path, days: float
) -> None:
    exposition = scrape(short_lived(tmp_path / "client.pem", days))
    for rule in expiry_rules():
        assert fires(rule["expr"], exposition), rule["alert"]


def test_only_the_early_warning_fires_three_weeks_ahead(tmp_path: Path) -> None:
    exposition = scrape(short_lived(tmp_path / "client.pem", 21))
    fired = {rule["alert"] for rule in expiry_rules() if fires(rule["expr"], exposition)}
    assert fired == {"YibaoSidecarCertificateExpiringSoon"}


def test_the_development_pki_does_not_fire_them(tmp_path: Path) -> None:
    pki = devcerts.generate(tmp_path / "dev-pki")
    exposition = scrape(pki.client_cert)
    for rule in expiry_rules():
        assert not fires(rule["expr"], exposition), rule["alert"]
    # ... nor when the cache is reused just before regeneration (devcerts.REUSE_MARGIN)
    thresholds = [constant(promql_parser.parse(rule["expr"]).rhs) for rule in expiry_rules()]
    assert dt.timedelta(seconds=max(thresholds)) < devcerts.REUSE_MARGIN

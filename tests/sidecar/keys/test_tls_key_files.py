"""A TLS key file (development mode) is checked against its certificate at start-up.

libcurl reads the key file only at the first handshake; ``check_file_key`` reads it at start-up so
that a key the certificate does not certify, an encrypted key or no key at all is one line naming
the file, never its content."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from sidecar.config import ConfigError
from sidecar.keys.tls_key import check_file_key
from tests.tls_pki import make_ca

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _certificate(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> Path:
    ca_key, ca = make_ca("file key CA", NOW)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "client")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(NOW)
        .not_valid_after(NOW + dt.timedelta(days=30))
        .sign(ca_key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _key_file(
    path: Path,
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    encryption: serialization.KeySerializationEncryption | None = None,
) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            encryption or serialization.NoEncryption(),
        )
    )
    return path


@pytest.mark.parametrize("kind", ["ec", "rsa"])
def test_a_key_file_its_certificate_certifies_passes(tmp_path: Path, kind: str) -> None:
    key = (
        ec.generate_private_key(ec.SECP256R1())
        if kind == "ec"
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    check_file_key(_certificate(tmp_path / "c.pem", key), _key_file(tmp_path / "k.pem", key))


def test_a_key_file_of_another_certificate_is_one_line_naming_both(tmp_path: Path) -> None:
    cert = _certificate(tmp_path / "c.pem", ec.generate_private_key(ec.SECP256R1()))
    other = _key_file(tmp_path / "other.pem", ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(ConfigError) as caught:
        check_file_key(cert, other)
    message = str(caught.value)
    assert message == (
        f"config: platform.client_cert_file {cert} does not certify "
        f"platform.client_key_file {other} (public keys differ)"
    )


@pytest.mark.parametrize("content", ["encrypted", "certificate", "garbage", "missing"])
def test_a_key_file_that_is_no_usable_key_is_one_line_without_its_content(
    tmp_path: Path, content: str
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate(tmp_path / "c.pem", key)
    path = tmp_path / "k.pem"
    if content == "encrypted":
        _key_file(path, key, serialization.BestAvailableEncryption(b"secret-passphrase"))
    elif content == "certificate":
        path.write_bytes(cert.read_bytes())
    elif content == "garbage":
        path.write_bytes(b"not a key: secret-passphrase\n")
    with pytest.raises(ConfigError) as caught:
        check_file_key(cert, path)
    message = str(caught.value)
    assert message.startswith("config: platform.client_key_file: ") and str(path) in message
    assert "\n" not in message and "secret-passphrase" not in message and "BEGIN" not in message

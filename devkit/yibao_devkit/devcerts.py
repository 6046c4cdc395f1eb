"""Throwaway development PKI for the platform simulator and the sidecar's tests.

These are development certificates only: they let the simulator speak mutual TLS the way the
national platform's gateway does, so that the sidecar's tunnel is exercised end to end in tests,
demos and integrators' sandboxes. Production uses the certificates the platform issues to the
institution; nothing here must ever be configured against the real platform.

Two unrelated authorities are generated. The "platform" CA signs the simulator's server
certificate and the sidecar's client certificate. The "other" CA signs a client certificate with
the same subject name, so tests can prove the simulator refuses a certificate that merely *looks*
right but chains to the wrong authority.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CLIENT_COMMON_NAME = "yibao-sidecar-dev"
# A demo or integration environment lives for months: 397 days (the longest a public TLS leaf
# may last) keeps the sidecar's certificate-expiry alert (< 30 days) quiet for a year.
VALIDITY = dt.timedelta(days=397)
BACKDATE = dt.timedelta(hours=1)  # tolerate clocks that are slightly behind
# Reused files are regenerated before they come within the alert's 30 days, so a long-lived
# dev cache never makes YibaoSidecarCertificateExpiringSoon fire.
REUSE_MARGIN = dt.timedelta(days=31)

_ORGANISATION = "yibao-sidecar development (NOT FOR PRODUCTION)"


@dataclass(frozen=True)
class DevPki:
    """Where the development PKI's PEM files live."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca_cert: Path
    other_client_cert: Path
    other_client_key: Path

    @classmethod
    def in_directory(cls, directory: Path) -> DevPki:
        """The fixed file layout inside ``directory`` (the files need not exist yet)."""
        return cls(
            ca_cert=directory / "ca.pem",
            server_cert=directory / "server.pem",
            server_key=directory / "server-key.pem",
            client_cert=directory / "client.pem",
            client_key=directory / "client-key.pem",
            other_ca_cert=directory / "other-ca.pem",
            other_client_cert=directory / "other-client.pem",
            other_client_key=directory / "other-client-key.pem",
        )

    def paths(self) -> tuple[Path, ...]:
        """Every file of the PKI, in field order."""
        return tuple(getattr(self, f.name) for f in fields(self))


def generate(
    directory: Path, *, server_names: Sequence[str] = ("localhost", "127.0.0.1")
) -> DevPki:
    """Create (or reuse) the development PKI in ``directory``.

    Existing files are reused when all of them are present, every certificate stays valid for
    more than a day, and the server certificate already names every entry of ``server_names``;
    otherwise the whole set is regenerated, so the files always belong together.
    """
    if not server_names:
        raise ValueError("server_names must name at least one host")
    pki = DevPki.in_directory(directory)
    now = dt.datetime.now(dt.UTC)
    if _reusable(pki, server_names, now):
        return pki

    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca_key, ca_cert = _authority("yibao platform simulator dev CA", now)
    server_key, server_cert = _leaf(
        ca_key, ca_cert, server_names[0], now, server_names=server_names
    )
    client_key, client_cert = _leaf(ca_key, ca_cert, CLIENT_COMMON_NAME, now)
    other_key, other_cert = _authority("unrelated dev CA", now)
    other_client_key, other_client_cert = _leaf(other_key, other_cert, CLIENT_COMMON_NAME, now)

    _write_cert(pki.ca_cert, ca_cert)
    _write_key(pki.server_key, server_key)
    _write_cert(pki.server_cert, server_cert)
    _write_key(pki.client_key, client_key)
    _write_cert(pki.client_cert, client_cert)
    _write_cert(pki.other_ca_cert, other_cert)
    _write_key(pki.other_client_key, other_client_key)
    _write_cert(pki.other_client_cert, other_client_cert)
    return pki


def generate_for_client_key(
    directory: Path,
    client_public_key: CertificatePublicKeyTypes,
    *,
    server_names: Sequence[str] = ("localhost", "127.0.0.1"),
) -> DevPki:
    """A fresh development PKI whose client certificate certifies a key held elsewhere.

    For the TLS client key in the HSM (``yibao-hsm keygen --purpose tls``): the dev CA issues
    ``client.pem`` for ``client_public_key`` and no ``client-key.pem`` is written.
    """
    pki = generate(directory, server_names=server_names)  # the unrelated CA and its client
    now = dt.datetime.now(dt.UTC)
    ca_key, ca_cert = _authority("yibao platform simulator dev CA", now)
    server_key, server_cert = _leaf(
        ca_key, ca_cert, server_names[0], now, server_names=server_names
    )
    _write_cert(pki.ca_cert, ca_cert)
    _write_key(pki.server_key, server_key)
    _write_cert(pki.server_cert, server_cert)
    _write_cert(
        pki.client_cert, _certificate(ca_key, ca_cert, CLIENT_COMMON_NAME, client_public_key, now)
    )
    pki.client_key.unlink(missing_ok=True)
    return pki


def _reusable(pki: DevPki, server_names: Sequence[str], now: dt.datetime) -> bool:
    """Whether the files on disk are complete, fresh enough and name the wanted hosts."""
    if not all(path.is_file() for path in pki.paths()):
        return False
    try:
        certs = [
            x509.load_pem_x509_certificate(path.read_bytes())
            for path in (
                pki.ca_cert,
                pki.server_cert,
                pki.client_cert,
                pki.other_ca_cert,
                pki.other_client_cert,
            )
        ]
        san = certs[1].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    if any(cert.not_valid_after_utc - now <= REUSE_MARGIN for cert in certs):
        return False
    named = set(san.get_values_for_type(x509.DNSName)) | {
        str(ip) for ip in san.get_values_for_type(x509.IPAddress)
    }
    return all(_normalise_name(name) in named for name in server_names)


def _normalise_name(name: str) -> str:
    """An IP address in canonical text form, or the DNS name unchanged."""
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANISATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _authority(
    common_name: str, now: dt.datetime
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA that may sign leaves but no further authorities."""
    key = _new_key()
    name = _name(common_name)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    common_name: str,
    now: dt.datetime,
    *,
    server_names: Sequence[str] = (),
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A server certificate when ``server_names`` is given, else a client certificate."""
    key = _new_key()
    return key, _certificate(ca_key, ca_cert, common_name, key.public_key(), now, server_names)


def _certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    common_name: str,
    public: CertificatePublicKeyTypes,
    now: dt.datetime,
    server_names: Sequence[str] = (),
) -> x509.Certificate:
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server_names else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    # Clients get their name as a SAN too: strict verifiers (RFC 5280 profiles, cryptography's
    # client verifier) ignore the subject CN and require the extension.
    alt_names = [_general_name(n) for n in server_names] or [x509.DNSName(common_name)]
    builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    _write_atomically(path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_atomically(path, pem, mode=0o600)


def _write_atomically(path: Path, content: bytes, *, mode: int) -> None:
    """Write ``content`` to a fresh temporary file with ``mode``, then rename it into place.

    The temporary file is created with ``O_EXCL`` and its final mode before any byte is written,
    so a private key is never readable by others, not even for an instant, and a reader never
    sees a half-written file.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)  # left over by a crashed run of this same process id
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as out:
            os.fchmod(out.fileno(), mode)  # the umask may have removed bits, never added any
            out.write(content)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

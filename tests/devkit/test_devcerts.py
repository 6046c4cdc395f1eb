"""The development PKI: private keys are private, certificates chain and name the server."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from yibao_devkit import devcerts
from yibao_devkit.devcerts import DevPki


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_private_keys_are_0600_unencrypted_pkcs8(pki: DevPki) -> None:
    for key in (pki.server_key, pki.client_key, pki.other_client_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        pem = key.read_text()
        assert pem.startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8, not encrypted


def test_keys_are_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        pki = devcerts.generate(tmp_path)
    finally:
        os.umask(previous)
    for key in (pki.server_key, pki.client_key, pki.other_client_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_server_certificate_chains_to_the_ca_and_names_the_server(pki: DevPki) -> None:
    store = Store([load(pki.ca_cert)])
    server = load(pki.server_cert)
    for name in (x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))):
        verifier = PolicyBuilder().store(store).build_server_verifier(name)
        chain = verifier.verify(server, [])
        assert chain[-1] == load(pki.ca_cert)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]


def test_client_certificates_chain_only_to_their_own_ca(pki: DevPki) -> None:
    platform = PolicyBuilder().store(Store([load(pki.ca_cert)])).build_client_verifier()
    other = PolicyBuilder().store(Store([load(pki.other_ca_cert)])).build_client_verifier()
    client = load(pki.client_cert)
    impostor = load(pki.other_client_cert)
    platform.verify(client, [])
    other.verify(impostor, [])
    with pytest.raises(VerificationError):
        platform.verify(impostor, [])
    with pytest.raises(VerificationError):
        other.verify(client, [])
    for cert in (client, impostor):
        common_name = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        assert common_name == "yibao-sidecar-dev"
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_validity_and_algorithms(pki: DevPki) -> None:
    now = dt.datetime.now(dt.UTC)
    for path in (pki.ca_cert, pki.server_cert, pki.client_cert, pki.other_ca_cert):
        cert = load(path)
        assert cert.not_valid_before_utc < now - dt.timedelta(minutes=50)
        assert dt.timedelta(days=396) < cert.not_valid_after_utc - now <= dt.timedelta(days=397)
        assert cert.signature_hash_algorithm is not None
        assert cert.signature_hash_algorithm.name == "sha256"
        assert cert.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]


def test_generate_reuses_fresh_files(tmp_path: Path) -> None:
    first = devcerts.generate(tmp_path)
    before = {path: path.read_bytes() for path in first.paths()}
    second = devcerts.generate(tmp_path)
    assert second == first
    assert {path: path.read_bytes() for path in second.paths()} == before


def test_generate_replaces_files_that_do_not_fit(tmp_path: Path) -> None:
    first = devcerts.generate(tmp_path)
    old_ca = first.ca_cert.read_bytes()
    wider = devcerts.generate(tmp_path, server_names=("localhost", "127.0.0.1", "sim.test"))
    assert wider.ca_cert.read_bytes() != old_ca
    san = load(wider.server_cert).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert "sim.test" in san.value.get_values_for_type(x509.DNSName)

    wider_ca = wider.ca_cert.read_bytes()
    wider.client_key.unlink()  # an incomplete set is regenerated as a whole
    again = devcerts.generate(tmp_path, server_names=("sim.test",))
    assert again.client_key.is_file()
    assert again.ca_cert.read_bytes() != wider_ca
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_files_nearing_the_expiry_alert_are_regenerated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(devcerts, "VALIDITY", dt.timedelta(days=29))  # inside the alert's 30
    old = devcerts.generate(tmp_path).client_cert.read_bytes()
    monkeypatch.undo()
    fresh = devcerts.generate(tmp_path)
    assert fresh.client_cert.read_bytes() != old
    left = load(fresh.client_cert).not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert left > dt.timedelta(days=396)

"""The curl transport with the TLS client key inside SoftHSM, through OpenSSL's pkcs11 engine.

The key is generated in the token (sensitive, never extractable) with python-pkcs11 here; the
HSM side's ``yibao-hsm keygen --purpose tls`` makes the same kind of key. A throw-away CA signs
a certificate for its public key, and a TLS server that demands that CA's client certificates
answers only if the handshake was signed by the token.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hsm.pin import Pin
from hsm.tlskey import find_pkcs11_engine, openssl_engine_config
from sidecar.config import PlatformConfig
from sidecar.platform.curl_transport import CurlTransport
from sidecar.platform.openssl_conf import OpenSslConfigError
from sidecar.platform.transport import ClientIdentity, EngineKey, TransportError
from tests.hsm_fixtures import SoftHsmTokens
from tests.tls_pki import make_ca, token_p256_key

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)  # certificates valid 2025-2036, no host clock


@dataclass(frozen=True)
class TokenTls:
    directory: Path
    label: str
    pin: str
    openssl_conf: Path
    # A second token with the same kind of key that nothing logs in to successfully: PKCS#11
    # login state is per process and token, so a wrong PIN must meet a token not yet logged in.
    spare_label: str

    def engine_key(self, pin: str | None = None, *, spare: bool = False) -> EngineKey:
        label = self.spare_label if spare else self.label
        uri = f"pkcs11:token={label};object=tls-client;type=private"
        return EngineKey("pkcs11", uri, Pin(pin or self.pin, "test PIN file"), self.openssl_conf)


def _certificate(
    subject: str, public: ec.EllipticCurvePublicKey, ca_key: ec.EllipticCurvePrivateKey
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "engine test CA")]))
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=365))
        .not_valid_after(NOW + dt.timedelta(days=3650))
        .add_extension(
            x509.BasicConstraints(ca=subject == "engine test CA", path_length=None), True
        )
    )
    if subject == "localhost":
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
        )
    return builder.sign(ca_key, hashes.SHA256())


def _pem(item: x509.Certificate) -> bytes:
    return item.public_bytes(serialization.Encoding.PEM)


def _tls_key(lib: Path, label: str, pin: str) -> bytes:
    """An EC P-256 key pair in the token, the private half never extractable; the public DER."""
    return token_p256_key(lib, label, pin)


@pytest.fixture(scope="module")
def token_tls(softhsm_tokens: SoftHsmTokens, tmp_path_factory: pytest.TempPathFactory) -> TokenTls:
    made = softhsm_tokens.make("curl-tls")
    spare = softhsm_tokens.make("curl-tls-spare")
    public_der = _tls_key(made.lib, made.label, made.user_pin_file.read_text().strip())
    _tls_key(spare.lib, spare.label, spare.user_pin_file.read_text().strip())
    directory = tmp_path_factory.mktemp("engine-pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("engine test CA", ca_key.public_key(), ca_key)
    server_key = ec.generate_private_key(ec.SECP256R1())
    client_public = serialization.load_der_public_key(public_der)
    assert isinstance(client_public, ec.EllipticCurvePublicKey)
    (directory / "ca.pem").write_bytes(_pem(ca))
    (directory / "server.pem").write_bytes(
        _pem(_certificate("localhost", server_key.public_key(), ca_key))
    )
    (directory / "server-key.pem").write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (directory / "client.pem").write_bytes(
        _pem(_certificate("token client", client_public, ca_key))
    )
    conf = directory / "openssl-pkcs11.cnf"
    # The sidecar's own engine configuration (what sidecar/keys/tls_key.py writes): one engine
    # configuration per process, so every test of a run shares it.
    conf.write_text(
        openssl_engine_config(made.lib.resolve(), find_pkcs11_engine()), encoding="ascii"
    )
    return TokenTls(
        directory, made.label, made.user_pin_file.read_text().strip(), conf, spare.label
    )


@contextlib.asynccontextmanager
async def mtls_server(pki: Path, peers: list[str]) -> AsyncIterator[str]:
    """An HTTP/1.1 server demanding a client certificate from the test CA; notes its subject."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki / "ca.pem"))
    context.load_cert_chain(pki / "server.pem", pki / "server-key.pem")
    context.verify_mode = ssl.CERT_REQUIRED

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await reader.readuntil(b"\r\n\r\n")
            peer = writer.get_extra_info("ssl_object").getpeercert()
            peers.append(dict(x[0] for x in peer["subject"])["commonName"])
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nsigned!")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    try:
        yield f"https://localhost:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


def transport(url: str, tls: TokenTls, key: EngineKey) -> CurlTransport:
    pki = tls.directory
    platform = PlatformConfig(
        url=url,
        ca_file=pki / "ca.pem",
        client_cert_file=pki / "client.pem",
        client_key_file=pki / "client.pem",  # unused: the key is the engine's
        transport="curl",
        http2=False,
    )
    identity = ClientIdentity(pki / "client.pem", engine_key=key)
    return CurlTransport(platform, pki / "ca.pem", identity)


async def test_the_handshake_is_signed_by_the_key_in_the_token(token_tls: TokenTls) -> None:
    peers: list[str] = []
    async with mtls_server(token_tls.directory, peers) as url:
        tunnel = transport(url, token_tls, token_tls.engine_key())
        try:
            assert await tunnel.post(b"{}", timeout=10) == b"signed!"
            assert await tunnel.post(b"{}", timeout=10) == b"signed!"
        finally:
            await tunnel.aclose()
    assert peers == ["token client", "token client"]


async def test_a_wrong_pin_fails_cleanly_without_showing_it(token_tls: TokenTls) -> None:
    peers: list[str] = []
    async with mtls_server(token_tls.directory, peers) as url:
        tunnel = transport(url, token_tls, token_tls.engine_key(pin="wrong-pin-4321", spare=True))
        try:
            with pytest.raises(TransportError) as caught:
                await tunnel.post(b"{}", timeout=10)
        finally:
            await tunnel.aclose()
    assert caught.value.sent is False
    assert "cannot connect to the platform" in str(caught.value)
    assert "wrong-pin-4321" not in str(caught.value) and token_tls.pin not in str(caught.value)
    assert peers == []


def test_a_missing_openssl_configuration_is_one_clear_error(
    token_tls: TokenTls, tmp_path: Path
) -> None:
    key = EngineKey("pkcs11", "pkcs11:object=x", Pin("1", "t"), tmp_path / "absent.cnf")
    with pytest.raises(OpenSslConfigError, match=r"absent\.cnf is not a readable file"):
        transport("https://localhost:1", token_tls, key)


@contextlib.contextmanager
def refusing_server(pki: Path, trusted_ca: Path, log: Path) -> Iterator[str]:
    """``openssl s_server`` trusting only ``trusted_ca`` for client certificates: a certificate
    from another CA gets the TLS alert ``unknown_ca``, as an nginx gateway sends it (the
    simulator's asyncio server closes without one). Its output goes to ``log``."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-www"]
    argv += ["-cert", str(pki / "server.pem"), "-key", str(pki / "server-key.pem")]
    argv += ["-CAfile", str(trusted_ca), "-Verify", "1", "-verify_return_error"]
    with log.open("w") as out:
        server = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                break  # listening (this empty connection is one s_server shrugs off)
            time.sleep(0.05)
        yield f"https://localhost:{port}"
    finally:
        server.kill()
        server.wait(timeout=30)


async def test_a_gateway_refusing_the_token_certificate_with_an_alert_is_not_sent(
    token_tls: TokenTls, tmp_path: Path
) -> None:
    _, other_ca = make_ca("a CA the client is not from", NOW)
    trusted = tmp_path / "other-ca.pem"
    trusted.write_bytes(_pem(other_ca))
    log = tmp_path / "s_server.log"
    with refusing_server(token_tls.directory, trusted, log) as url:
        tunnel = transport(url, token_tls, token_tls.engine_key())
        try:
            with pytest.raises(TransportError) as caught:
                await tunnel.post(b"{}", timeout=10)
        finally:
            await tunnel.aclose()
    # With TLS 1.3 the request may already be written when the alert arrives; the gateway
    # never accepted the connection, so it never read it: not sent, and the alert is the reason.
    assert caught.value.sent is False
    assert str(caught.value).startswith("cannot connect to the platform: ")
    assert "alert unknown ca" in str(caught.value)
    assert token_tls.pin not in str(caught.value)
    assert "verify error" in log.read_text()  # the server refused the certificate itself

"""The libcurl transport's pieces that need no server: the library it links, pins, identities."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pycurl
import pytest
from cryptography.hazmat.primitives import serialization
from pydantic import ValidationError

from hsm.pin import Pin
from sidecar.config import ConfigError, PlatformConfig, load
from sidecar.platform.curl_transport import curl_pins, tls_key_fault
from sidecar.platform.transport import ClientIdentity, EngineKey, TlsFilesError, check_tls_files
from yibao_devkit import devcerts
from yibao_devkit.devcerts import DevPki


def test_pycurl_runs_on_debians_libcurl_with_openssl_3_and_nghttp2() -> None:
    info = pycurl.version_info()
    assert info[1].startswith("7.88.")  # Debian 12's libcurl, not a wheel's newer bundled one
    assert str(info[5]).startswith("OpenSSL/3.")
    assert "nghttp2/" in pycurl.version
    assert info[4] & pycurl.VERSION_HTTP2
    # The libcurl mapped into this process is the system's, not a copy shipped next to pycurl
    # (the PyPI wheel carries its own in pycurl.libs/ and cannot load Debian's OpenSSL engines).
    maps = Path("/proc/self/maps").read_text(encoding="ascii", errors="replace")
    libcurls = {line.split()[-1] for line in maps.splitlines() if "libcurl" in line}
    assert libcurls, "no libcurl mapped"
    for path in libcurls:
        assert path.startswith(("/usr/lib/", "/lib/")), path
        assert "site-packages" not in path and ".libs" not in path, path


def test_hex_pins_become_curls_sha256_base64_list() -> None:
    spki = b"any subject public key info"
    pin = hashlib.sha256(spki).hexdigest()
    other = "ab" * 32
    expected = [
        "sha256//" + base64.b64encode(hashlib.sha256(spki).digest()).decode(),
        "sha256//" + base64.b64encode(bytes.fromhex(other)).decode(),
    ]
    assert curl_pins((pin.upper(), other)) == ";".join(expected)


# What libcurl 7.88 / OpenSSL 3 say (the error buffer), as the integration tests see it.
SSL = "OpenSSL/3.0.19: error:"
VANISHED = SSL + "41800082:PKCS#11 module::Object handle invalid"  # the token moved away
NOT_LOADED = "failed to load private key from crypto engine"  # no token at the first load, bad PIN
NOT_SET = "unable to set private key"
NOT_KEY_FAULTS = [
    (pycurl.E_SSL_CONNECT_ERROR, SSL + "0A000418:SSL routines::tlsv1 alert unknown ca"),
    (
        pycurl.E_RECV_ERROR,
        "OpenSSL SSL_read: " + SSL + "0A000412:SSL routines::alert bad certificate",
    ),
    (pycurl.E_COULDNT_CONNECT, "Failed to connect to 127.0.0.1 port 9: Couldn't connect to server"),
    (pycurl.E_OPERATION_TIMEDOUT, "Connection timed out after 2001 milliseconds"),
    (pycurl.E_COULDNT_RESOLVE_HOST, "Could not resolve host: gateway.invalid"),
    (pycurl.E_SSL_PINNEDPUBKEYNOTMATCH, "SSL: public key does not match pinned public key"),
    (pycurl.E_PEER_FAILED_VERIFICATION, "SSL certificate problem: unable to get local issuer"),
    (pycurl.E_SSL_CERTPROBLEM, "could not load PEM client certificate from /x/client.pem, ..."),
    (pycurl.E_SSL_CERTPROBLEM, "unable to set private key file: '/x/key.pem' type PEM"),
    (pycurl.E_SEND_ERROR, VANISHED),  # not the handshake: not the key's
]


@pytest.mark.parametrize(
    ("code", "message", "fault"),
    [
        (pycurl.E_SSL_CONNECT_ERROR, VANISHED, ("pkcs11", "Object handle invalid")),
        (pycurl.E_SSL_CERTPROBLEM, NOT_LOADED, ("key_load", NOT_LOADED)),
        (pycurl.E_SSL_CERTPROBLEM, NOT_SET, ("key_load", NOT_SET)),
        *[(code, message, None) for code, message in NOT_KEY_FAULTS],
    ],
)
def test_only_the_engine_keys_own_failures_are_tls_key_faults(
    code: int, message: str, fault: tuple[str, str] | None
) -> None:
    assert tls_key_fault(code, message) == fault


def test_an_identity_has_exactly_one_key(tmp_path: Path) -> None:
    engine = EngineKey("pkcs11", "pkcs11:token=t;object=tls;type=private", Pin("1234", "test"))
    ClientIdentity(tmp_path / "c.pem", key_file=tmp_path / "k.pem")
    ClientIdentity(tmp_path / "c.pem", engine_key=engine)
    with pytest.raises(ValueError, match="exactly one"):
        ClientIdentity(tmp_path / "c.pem")
    with pytest.raises(ValueError, match="exactly one"):
        ClientIdentity(tmp_path / "c.pem", key_file=tmp_path / "k.pem", engine_key=engine)


def test_an_engine_key_uri_may_not_carry_the_pin_and_never_prints_it() -> None:
    with pytest.raises(ValueError, match="must not carry the PIN"):
        EngineKey("pkcs11", "pkcs11:object=tls;pin-value=1234", Pin("1234", "test"))
    key = EngineKey("pkcs11", "pkcs11:object=tls", Pin("s3cret-pin", "pin file"))
    assert "s3cret-pin" not in repr(key)


def test_libcurl_is_the_tunnel_and_httpx_is_refused_with_what_to_do(tmp_path: Path) -> None:
    base = {
        "url": "https://gw.example",
        "ca_file": tmp_path / "ca.pem",
        "client_cert_file": tmp_path / "c.pem",
        "client_key_file": tmp_path / "k.pem",
    }
    assert PlatformConfig.model_validate(base).transport == "curl"  # the default
    assert PlatformConfig.model_validate(base).http2 is True
    assert PlatformConfig.model_validate({**base, "transport": "curl"}).transport == "curl"
    with pytest.raises(ValidationError, match="transport"):
        PlatformConfig.model_validate({**base, "transport": "requests"})
    config = tmp_path / "sidecar.toml"
    config.write_text(
        '[institution]\ncode = "H11010500001"\nname = "n"\ndivision = "110105"\n'
        '[platform]\nurl = "https://gw.example"\nca_file = "ca.pem"\n'
        'client_cert_file = "c.pem"\nclient_key_file = "k.pem"\ntransport = "httpx"\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load(config, environ={})
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("config: platform.transport ")
    assert (
        'the httpx tunnel was removed: libcurl is the only one; set transport = "curl"' in message
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return devcerts.generate(tmp_path_factory.mktemp("pki"))


def test_matching_tls_files_pass_the_start_up_check(pki: DevPki) -> None:
    check_tls_files(pki.ca_cert, ClientIdentity(pki.client_cert, pki.client_key))
    engine = EngineKey("pkcs11", "pkcs11:object=tls", Pin("1234", "test"))
    check_tls_files(pki.ca_cert, ClientIdentity(pki.client_cert, engine_key=engine))


def test_tls_files_that_cannot_work_stop_start_up_naming_the_file(
    pki: DevPki, tmp_path: Path
) -> None:
    key_text = pki.client_key.read_text(encoding="ascii")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not PEM at all\n", encoding="ascii")
    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(
        serialization.load_pem_private_key(pki.client_key.read_bytes(), None).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret-passphrase"),
        )
    )
    cases = [
        (pki.ca_cert, ClientIdentity(pki.client_cert, pki.other_client_key), "is not the key of"),
        (pki.ca_cert, ClientIdentity(pki.client_cert, pki.client_cert), "unencrypted PEM private"),
        (pki.ca_cert, ClientIdentity(pki.client_key, pki.client_key), "is not a PEM certificate"),
        (garbage, ClientIdentity(pki.client_cert, pki.client_key), "bundle of PEM certificates"),
        (pki.ca_cert, ClientIdentity(pki.client_cert, tmp_path / "absent"), "unencrypted PEM"),
        (pki.ca_cert, ClientIdentity(pki.client_cert, encrypted), "unencrypted PEM private"),
    ]
    for ca, identity, fragment in cases:
        with pytest.raises(TlsFilesError) as caught:
            check_tls_files(ca, identity)
        assert fragment in str(caught.value)
        assert "secret-passphrase" not in str(caught.value) and "\n" not in str(caught.value)
        assert "PRIVATE KEY" not in str(caught.value) and key_text[40:80] not in str(caught.value)

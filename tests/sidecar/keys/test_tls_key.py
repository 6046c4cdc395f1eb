"""``[platform] client_key = "token:tls"``: the TLS client key stays in the HSM.

The configuration refuses what cannot work (httpx with a token key, two keys, none, no [hsm]);
start-up builds the transport's ``EngineKey`` from the token (URI without PIN, PIN that never
prints, OpenSSL configuration without secrets in a private directory removed at close) and refuses
a certificate that does not certify the token key, in one line."""

from __future__ import annotations

import datetime as dt
import stat
import tempfile
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hsm.keys import KeyStore
from hsm.tlskey import TlsKeyStore
from hsm.token import HsmToken, TokenConfig
from sidecar import config
from sidecar.config import ConfigError, HsmConfig, PlatformConfig
from sidecar.keys.tls_key import file_key_warning, token_tls_key
from tests.hsm_fixtures import MadeToken, SoftHsmTokens

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)

BASE = """
[institution]
code = "H11010500001"
name = "某某科技有限公司医保服务"
division = "110105"

[platform]
url = "https://127.0.0.1:9443"
ca_file = "/etc/yibao/platform-ca.pem"
client_cert_file = "/etc/yibao/client.pem"
"""
HSM = """
[hsm]
module = "/usr/lib/softhsm/libsofthsm2.so"
token_label = "t"
user_pin_file = "/run/secrets/pin"
"""


def load(tmp_path: Path, platform_lines: str, hsm: bool = True) -> config.Settings:
    path = tmp_path / "sidecar.toml"
    path.write_text(BASE + platform_lines + (HSM if hsm else ""))
    return config.load(path, environ={})


def test_token_key_with_curl_transport_is_accepted(tmp_path: Path) -> None:
    s = load(tmp_path, 'client_key = "token:tls"\ntransport = "curl"\n')
    assert s.platform.client_key == "token:tls" and s.platform.client_key_file is None
    s = load(tmp_path, 'client_key = "token:tls/2026-11.2"\ntransport = "curl"\n')
    assert s.platform.client_key == "token:tls/2026-11.2"


@pytest.mark.parametrize(
    ("lines", "hsm", "fragments"),
    [
        (
            'client_key = "token:tls"\ntransport = "httpx"\n',
            True,
            ("platform.transport", "the httpx tunnel was removed"),
        ),
        (
            'client_key = "token:tls"\nclient_key_file = "k.pem"\ntransport = "curl"\n',
            True,
            ("one way", "client_key_file"),
        ),
        ("", True, ("one way",)),
        ('client_key = "token:tls"\ntransport = "curl"\n', False, ("configure [hsm]",)),
        ('client_key = "file:/k.pem"\ntransport = "curl"\n', True, ("platform.client_key",)),
        ('client_key = "token:sign"\ntransport = "curl"\n', True, ("platform.client_key",)),
    ],
)
def test_configurations_that_cannot_work_are_refused_in_one_line(
    tmp_path: Path, lines: str, hsm: bool, fragments: tuple[str, ...]
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, lines, hsm)
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_file_key_with_hsm_warns(tmp_path: Path) -> None:
    with_hsm = load(tmp_path, 'client_key_file = "k.pem"\n')
    assert file_key_warning(with_hsm.platform, with_hsm.hsm) == (
        "platform.client_key_file_with_hsm_development_only"
    )
    without = load(tmp_path, 'client_key_file = "k.pem"\n', hsm=False)
    assert file_key_warning(without.platform, without.hsm) is None


# ---------------------------------------------------------------------- with the real token
def _cert(tmp_path: Path, public_key: Any, name: str) -> Path:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "yibao-sidecar")]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ca")]))
        .public_key(public_key)
        .serial_number(7)
        .not_valid_before(NOW)
        .not_valid_after(NOW + dt.timedelta(days=90))
        .sign(ca_key, hashes.SHA256())
    )
    path = tmp_path / name
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.fixture(scope="module")
def tls_made(softhsm_tokens: SoftHsmTokens) -> MadeToken:
    made = softhsm_tokens.make("yibao-side-tls")
    with made.open(pool_size=1) as token:
        TlsKeyStore(token).generate("2026-11", today=NOW.date())
    return made


def _sections(made: MadeToken, cert: Path) -> tuple[PlatformConfig, HsmConfig]:
    platform = PlatformConfig(
        url="https://127.0.0.1:9443",
        ca_file=Path("/ca.pem"),
        client_cert_file=cert,
        client_key="token:tls",
        transport="curl",
    )
    return platform, HsmConfig(**made.hsm_section())  # type: ignore[arg-type]


def test_engine_key_from_the_token(tls_made: MadeToken, tmp_path: Path) -> None:
    with tls_made.open(pool_size=1) as token:
        info = TlsKeyStore(token).current()
        public = serialization.load_der_public_key(info.spki_der)
        platform, hsm = _sections(tls_made, _cert(tmp_path, public, "client.pem"))
        link = token_tls_key(platform, hsm, token)
    key = link.identity.engine_key
    assert key is not None and link.identity.key_file is None
    pin = tls_made.user_pin_file.read_text().strip()
    assert key.engine == "pkcs11"
    assert key.key_id == "pkcs11:token=yibao-side-tls;object=tls%2F2026-11;type=private"
    assert key.pin.reveal() == pin and pin not in repr(key) and pin not in str(link)
    assert key.openssl_conf is not None
    conf = key.openssl_conf.read_text()
    assert f"MODULE_PATH = {tls_made.lib.resolve()}" in conf and pin not in conf
    assert "dynamic_path = /" in conf and "engines-3/pkcs11.so" in conf
    assert stat.S_IMODE(key.openssl_conf.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(key.openssl_conf.stat().st_mode) == 0o600
    link.close()
    assert not key.openssl_conf.parent.exists()


def test_certificate_of_another_key_is_refused_in_one_line(
    tls_made: MadeToken, tmp_path: Path
) -> None:
    stranger = _cert(tmp_path, ec.generate_private_key(ec.SECP256R1()).public_key(), "x.pem")
    platform, hsm = _sections(tls_made, stranger)
    before = set(Path(tempfile.gettempdir()).glob("yibao-openssl-*"))
    with tls_made.open(pool_size=1) as token, pytest.raises(ConfigError) as caught:
        token_tls_key(platform, hsm, token)
    message = str(caught.value)
    assert "\n" not in message
    assert "does not certify platform.client_key tls/2026-11" in message
    assert set(Path(tempfile.gettempdir()).glob("yibao-openssl-*")) == before


def test_token_without_tls_key_names_the_ceremony_step(
    softhsm_tokens: SoftHsmTokens, tmp_path: Path
) -> None:
    empty = softhsm_tokens.make("yibao-no-tls")
    stranger = _cert(tmp_path, ec.generate_private_key(ec.SECP256R1()).public_key(), "x.pem")
    platform, hsm = _sections(empty, stranger)
    with empty.open(pool_size=1) as token, pytest.raises(ConfigError) as caught:
        token_tls_key(platform, hsm, token)
    assert "no tls key" in str(caught.value)
    assert "yibao-hsm keygen --purpose tls" in str(caught.value)


def test_a_tls_key_beside_an_sm2_key_is_refused_naming_it(
    softhsm_tokens: SoftHsmTokens, tmp_path: Path
) -> None:
    """libp11 0.4.12 finds no key in a token holding a key type it does not know (SM2)."""
    shared = softhsm_tokens.make("yibao-tls-sm2", purposes=("sign",))
    with shared.open(pool_size=1) as token:
        public = serialization.load_der_public_key(TlsKeyStore(token).generate().spki_der)
        platform, hsm = _sections(shared, _cert(tmp_path, public, "client.pem"))
        with pytest.raises(ConfigError) as caught:
            token_tls_key(platform, hsm, token)
    message = str(caught.value)
    assert "\n" not in message and "token 'yibao-tls-sm2' also holds sign/" in message
    assert "hsm.tls_token_label" in message


def test_the_tls_key_in_a_token_of_its_own(
    tls_made: MadeToken, softhsm_tokens: SoftHsmTokens, tmp_path: Path
) -> None:
    """``[hsm] tls_token_label``: the key and the URI come from that token; the [hsm] token (with
    its SM2 key) serves the rest with the same PIN file."""
    from hsm.inittoken import init_token
    from hsm.pin import Pin

    pin = tls_made.user_pin_file.read_text().strip()
    init_token(str(tls_made.lib), "yibao-tls-main", Pin("so-main-1", "so"), Pin(pin, "user"))
    with tls_made.open(pool_size=1) as token:
        public = serialization.load_der_public_key(TlsKeyStore(token).current().spki_der)
    platform, _ = _sections(tls_made, _cert(tmp_path, public, "client.pem"))
    hsm = HsmConfig(
        module=tls_made.lib,
        token_label="yibao-tls-main",
        user_pin_file=tls_made.user_pin_file,
        tls_token_label=tls_made.label,
    )
    main = HsmToken.open(
        TokenConfig(
            module=str(tls_made.lib),
            token_label="yibao-tls-main",
            user_pin_file=str(tls_made.user_pin_file),
            pool_size=1,
        )
    )
    try:
        KeyStore(main).generate("sign")
        link = token_tls_key(platform, hsm, main)
    finally:
        main.close()
    key = link.identity.engine_key
    assert key is not None
    assert key.key_id == "pkcs11:token=yibao-side-tls;object=tls%2F2026-11;type=private"
    link.close()
    missing = hsm.model_copy(update={"tls_token_label": "no-such-tls"})
    with main_token(tls_made) as other, pytest.raises(ConfigError) as caught:
        token_tls_key(platform, missing, other)
    assert str(caught.value).startswith("config: hsm.tls_token_label: ")
    assert "no-such-tls" in str(caught.value) and pin not in str(caught.value)


def main_token(made: MadeToken) -> HsmToken:
    return HsmToken.open(
        TokenConfig(
            module=str(made.lib),
            token_label="yibao-tls-main",
            user_pin_file=str(made.user_pin_file),
            pool_size=1,
        )
    )


# ---------------------------------------------------------------------- through libcurl
HANDSHAKE = r"""
import io, json, sys
import ssl  # OpenSSL is initialised (and OPENSSL_CONF read) before the engine is known
import pycurl
from pathlib import Path
from hsm.tlskey import TlsKeyStore
from hsm.token import HsmToken, TokenConfig
from sidecar.config import HsmConfig, PlatformConfig
from sidecar.keys.tls_key import token_tls_key

args = json.loads(sys.argv[1])
hsm = HsmConfig(**args["hsm"])
platform = PlatformConfig(url="https://localhost", ca_file=Path(args["ca"]),
    client_cert_file=Path(args["cert"]), client_key="token:tls", transport="curl")
token = HsmToken.open(TokenConfig(module=str(hsm.module), token_label=hsm.token_label,
                                  user_pin_file=str(hsm.user_pin_file), pool_size=1))
link = token_tls_key(platform, hsm, token)
key = link.identity.engine_key
out = {}
for attempt in ("first", "second"):  # the second reuses the engine's login
    c = pycurl.Curl()
    body = io.BytesIO()
    c.setopt(pycurl.URL, f"https://localhost:{args['port']}/")
    c.setopt(pycurl.RESOLVE, [f"localhost:{args['port']}:127.0.0.1"])
    c.setopt(pycurl.CAINFO, args["ca"])
    c.setopt(pycurl.SSLENGINE, key.engine)
    c.setopt(pycurl.SSLKEYTYPE, "ENG")
    c.setopt(pycurl.SSLKEY, key.key_id)
    c.setopt(pycurl.KEYPASSWD, key.pin.reveal())
    c.setopt(pycurl.SSLCERT, str(platform.client_cert_file))
    c.setopt(pycurl.WRITEDATA, body)
    c.setopt(pycurl.FORBID_REUSE, 1)
    c.perform()
    out[attempt] = [c.getinfo(pycurl.RESPONSE_CODE), body.getvalue().decode("latin-1")]
    c.close()
out["after"] = TlsKeyStore(token).current().label  # python-pkcs11 still works alongside libp11
link.close()
print(json.dumps(out))
"""


def test_tls13_handshake_through_libcurl_with_the_key_in_the_token(
    tls_made: MadeToken, tmp_path: Path
) -> None:
    """libcurl (pycurl on Debian's libcurl/OpenSSL) presents the token key through the engine
    to ``openssl s_server -Verify 1``; the PIN goes only through CURLOPT_KEYPASSWD."""
    import json
    import socket
    import subprocess
    import sys

    from tests.conftest import REPO
    from tests.tls_pki import make_ca

    ca_key, ca = make_ca("tunnel test ca", NOW)
    ca_name = ca.subject

    def issue(public_key: Any, cn: str, san: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca_name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(dt.datetime.now(dt.UTC) + dt.timedelta(days=30))
        )
        if san:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
            )
        return builder.sign(ca_key, hashes.SHA256())

    def pem(name: str, cert: x509.Certificate) -> Path:
        (tmp_path / name).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return tmp_path / name

    with tls_made.open(pool_size=1) as token:
        spki = TlsKeyStore(token).current().spki_der
    client = pem("client.pem", issue(serialization.load_der_public_key(spki), "sidecar", False))
    server_key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "server.key").write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server_pem = pem("server.pem", issue(server_key.public_key(), "localhost", True))
    ca_pem = pem("ca.pem", ca)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-naccept", "2", "-tls1_3",
         "-www", "-cert", str(server_pem), "-key", str(tmp_path / "server.key"),
         "-CAfile", str(ca_pem), "-Verify", "1", "-verify_return_error"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        for line in server.stdout:
            if line.startswith("ACCEPT"):
                break
        arg = json.dumps(
            {"hsm": tls_made.hsm_section(), "ca": str(ca_pem), "cert": str(client), "port": port}
        )
        proc = subprocess.run(
            [sys.executable, "-c", HANDSHAKE, arg],
            capture_output=True, text=True, timeout=60, env=tls_made.env(), cwd=REPO,
        )  # fmt: skip
        server_out, _ = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert proc.returncode == 0, proc.stderr
    pin = tls_made.user_pin_file.read_text().strip()
    assert pin not in proc.stdout + proc.stderr + server_out + arg
    result = json.loads(proc.stdout)
    for attempt in ("first", "second"):
        status, page = result[attempt]
        assert status == 200 and "TLSv1.3" in page, page
    assert result["after"] == "tls/2026-11"
    assert server_out.count("CN = sidecar") == 2, server_out  # two client certificates verified

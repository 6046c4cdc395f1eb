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

from hsm.tlskey import TlsKeyStore
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
        ('client_key = "token:tls"\n', True, ("platform.client_key", "platform.transport")),
        (
            'client_key = "token:tls"\ntransport = "httpx"\n',
            True,
            ("httpx transport cannot use a key held in the HSM",),
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

"""The libcurl transport's pieces that need no server: the library it links, pins, identities."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pycurl
import pytest
from pydantic import ValidationError

from hsm.pin import Pin
from sidecar.config import PlatformConfig
from sidecar.platform.curl_transport import curl_pins
from sidecar.platform.transport import ClientIdentity, EngineKey


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


def test_an_httpx_context_cannot_take_an_engine_key(tmp_path: Path) -> None:
    import ssl

    engine = EngineKey("pkcs11", "pkcs11:object=tls", Pin("1234", "test"))
    context = ssl.create_default_context()
    with pytest.raises(ValueError, match="only with the curl transport"):
        ClientIdentity(tmp_path / "c.pem", engine_key=engine).install(context)


def test_the_transport_choice_is_validated(tmp_path: Path) -> None:
    base = {
        "url": "https://gw.example",
        "ca_file": tmp_path / "ca.pem",
        "client_cert_file": tmp_path / "c.pem",
        "client_key_file": tmp_path / "k.pem",
    }
    assert PlatformConfig.model_validate(base).transport == "httpx"  # nothing changes by default
    assert PlatformConfig.model_validate({**base, "transport": "curl"}).transport == "curl"
    with pytest.raises(ValidationError, match="transport"):
        PlatformConfig.model_validate({**base, "transport": "requests"})

"""The TLS client key in the token: keygen/csr/import-cert, its policy, and a real TLS 1.3
handshake in which OpenSSL signs with the key through libp11's ``pkcs11`` engine."""

from __future__ import annotations

import datetime as dt
import json
import socket
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pkcs11 import Attribute, ObjectClass
from pkcs11 import exceptions as p11e

from hsm.tlskey import find_pkcs11_engine, openssl_engine_config, pkcs11_uri
from tests.hsm_fixtures import CLI, REPO, MadeToken, SoftHsmTokens, find_one
from tests.tls_pki import make_ca

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def tls_token(softhsm_tokens: SoftHsmTokens) -> MadeToken:
    return softhsm_tokens.make("yibao-tls")


def cli(t: MadeToken, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *CLI,
            *args,
            *("--module", str(t.lib), "--token-label", t.label),
            *("--user-pin-file", str(t.user_pin_file)),
            *("--profile", str(t.profile) if t.profile else "softhsm-sm"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=t.env(),
        cwd=REPO,
        stdin=subprocess.DEVNULL,
    )


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    return make_ca("test tls ca", NOW)


def _issue(
    ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate], public_key: object, cn: str
) -> x509.Certificate:
    ca_key, ca_cert = ca
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(dt.datetime.now(dt.UTC) + dt.timedelta(days=30))
        .sign(ca_key, hashes.SHA256())
    )


def _pem(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _csr(t: MadeToken, tmp_path: Path, *extra: str) -> tuple[Path, x509.CertificateSigningRequest]:
    out = tmp_path / "tls.csr"
    ok(cli(t, "csr", "--purpose", "tls", "--subject", "CN=yibao-sidecar,O=Example,C=CN",
           "--out", str(out), *extra))  # fmt: skip
    verify = subprocess.run(
        ["openssl", "req", "-verify", "-noout", "-in", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    # OpenSSL prints the verdict; a failure text with exit 0 is possible, so read the text.
    assert verify.returncode == 0 and "verify OK" in verify.stderr + verify.stdout, verify
    return out, x509.load_pem_x509_csr(out.read_bytes())


@pytest.mark.slow
def test_tls_key_is_ec_p256_sign_only_and_never_leaves_the_token(
    tls_token: MadeToken, tmp_path: Path
) -> None:
    gen = json.loads(ok(cli(tls_token, "keygen", "--purpose", "tls", "--version", "2026-11",
                            "--json")))  # fmt: skip
    assert gen["label"] == "tls/2026-11" and gen["key_type"] == "ec-p256"
    a = gen["attributes"]
    assert a["sensitive"] and a["never_extractable"] and a["always_sensitive"] and a["local"]
    assert a["extractable"] is False and a["sign"] is True
    assert a["decrypt"] is False and a["derive"] is False and a["unwrap"] is False
    with tls_token.open(pool_size=1) as tok:

        def probe(ws: object) -> None:
            key = find_one(ws, ObjectClass.PRIVATE_KEY, "tls/2026-11")
            with pytest.raises(p11e.AttributeSensitive):
                key[Attribute.VALUE]  # type: ignore[index]
            pub = find_one(ws, ObjectClass.PUBLIC_KEY, "tls/2026-11")
            assert bytes(pub[Attribute.EC_PARAMS]) == bytes.fromhex("06082a8648ce3d030107")  # type: ignore[index]

        tok.call(probe)
    _, req = _csr(tls_token, tmp_path)
    assert isinstance(req.public_key(), ec.EllipticCurvePublicKey)
    assert req.signature_hash_algorithm is not None
    assert req.signature_hash_algorithm.name == "sha256"
    fp = gen["fingerprint_sha256"]
    spki = req.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    import hashlib

    assert hashlib.sha256(spki).hexdigest() == fp


@pytest.mark.slow
def test_import_cert_stores_the_matching_certificate_and_refuses_another(
    tls_token: MadeToken, tmp_path: Path
) -> None:
    ca = _ca()
    _, req = _csr(tls_token, tmp_path, "--label", "tls/2026-11")
    stranger = _issue(ca, ec.generate_private_key(ec.SECP256R1()).public_key(), "stranger")
    proc = cli(tls_token, "import-cert", "--purpose", "tls", "--label", "tls/2026-11",
               "--cert", str(_pem(tmp_path / "stranger.pem", stranger)))  # fmt: skip
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "does not match key tls/2026-11" in proc.stderr
    garbage = tmp_path / "garbage.der"
    garbage.write_bytes(b"\x30\x03\x02\x01\x01")
    proc = cli(tls_token, "import-cert", "--purpose", "tls", "--cert", str(garbage))
    assert proc.returncode == 2 and "not a DER X.509 certificate" in proc.stderr, proc.stderr
    mine = _issue(ca, req.public_key(), "yibao-sidecar")
    ok(cli(tls_token, "import-cert", "--purpose", "tls",
           "--cert", str(_pem(tmp_path / "mine.pem", mine))))  # fmt: skip
    with tls_token.open(pool_size=1) as tok:
        stored = tok.call(
            lambda ws: bytes(find_one(ws, ObjectClass.CERTIFICATE, "tls/2026-11")[Attribute.VALUE])  # type: ignore[index]
        )
    assert stored == mine.public_bytes(serialization.Encoding.DER)


@pytest.mark.slow
def test_rsa_2048_where_the_profile_says_so(softhsm_tokens: SoftHsmTokens, tmp_path: Path) -> None:
    base = (REPO / "hsm/profiles/softhsm-sm.toml").read_text()
    assert 'tls_key = "ec-p256"' in base
    profile = tmp_path / "rsa.toml"
    profile.write_text(base.replace('tls_key = "ec-p256"', 'tls_key = "rsa-2048"'))
    t = softhsm_tokens.make("yibao-tls-rsa", profile=profile)
    gen = json.loads(ok(cli(t, "keygen", "--purpose", "tls", "--json")))
    assert gen["key_type"] == "rsa-2048" and gen["attributes"]["decrypt"] is False
    _, req = _csr(t, tmp_path)
    pub = req.public_key()
    from cryptography.hazmat.primitives.asymmetric import rsa

    assert isinstance(pub, rsa.RSAPublicKey) and pub.key_size == 2048


def test_engine_config_names_module_and_engine_only(tmp_path: Path) -> None:
    text = openssl_engine_config("/opt/hsm/lib.so", Path("/usr/lib/engines-3/pkcs11.so"))
    assert "MODULE_PATH = /opt/hsm/lib.so" in text and "PIN" not in text.upper().replace(
        "PKCS11", ""
    )
    from hsm.errors import ConfigError

    for bad in ("relative.so", "/x\nPIN = 1", '/x"y', "/x$HOME", "/x # c"):
        with pytest.raises(ConfigError):
            openssl_engine_config(bad, Path("/e.so"))
    assert pkcs11_uri("tok en", "tls/2026-11") == (
        "pkcs11:token=tok%20en;object=tls%2F2026-11;type=private"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.slow
def test_tls13_handshake_signs_with_the_key_in_the_token(
    softhsm_tokens: SoftHsmTokens, tmp_path: Path
) -> None:
    """``openssl s_server -Verify 1`` demands a client certificate; ``s_client`` presents the
    token key through the engine, the PIN read by OpenSSL from the PIN file (``-pass``), never
    in argv or the environment."""
    t = softhsm_tokens.make("yibao-tls-hs")
    gen = json.loads(ok(cli(t, "keygen", "--purpose", "tls", "--json")))
    ca = _ca()
    _, req = _csr(t, tmp_path)
    client_pem = _pem(tmp_path / "client.pem", _issue(ca, req.public_key(), "yibao-sidecar"))
    ok(cli(t, "import-cert", "--purpose", "tls", "--cert", str(client_pem)))
    server_key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "server.key").write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    _pem(tmp_path / "server.pem", _issue(ca, server_key.public_key(), "localhost"))
    ca_pem = _pem(tmp_path / "ca.pem", ca[1])
    conf = tmp_path / "engine.cnf"
    conf.write_text(openssl_engine_config(t.lib, find_pkcs11_engine()))
    port = _free_port()
    server = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-naccept", "1", "-tls1_3",
         "-cert", str(tmp_path / "server.pem"), "-key", str(tmp_path / "server.key"),
         "-CAfile", str(ca_pem), "-Verify", "1", "-verify_return_error"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        for line in server.stdout:  # the server listens once it says ACCEPT
            if line.startswith("ACCEPT"):
                break
        uri = pkcs11_uri(t.label, gen["label"])
        argv = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_3",
                "-CAfile", str(ca_pem), "-verify_return_error", "-engine", "pkcs11",
                "-keyform", "engine", "-key", uri, "-cert", str(client_pem),
                "-pass", f"file:{t.user_pin_file}"]  # fmt: skip
        pin = t.user_pin_file.read_text().strip()
        assert all(pin not in a for a in argv)
        env = {**t.env(), "OPENSSL_CONF": str(conf)}
        assert all(pin not in v for v in env.values())
        client = subprocess.run(
            argv, input="Q\n", capture_output=True, text=True, timeout=60, env=env
        )
        out = client.stdout + client.stderr
        assert client.returncode == 0, out
        assert "New, TLSv1.3, Cipher is" in out and "Verify return code: 0 (ok)" in out
        assert pin not in out
        server_out, _ = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    # The server verified the client chain up to our CA: the token key signed CertificateVerify.
    assert "CN = yibao-sidecar" in server_out and "verify return:1" in server_out, server_out


@pytest.mark.slow
def test_list_and_check_cover_tls_keys_and_an_exportable_one_is_refused(
    softhsm_tokens: SoftHsmTokens, tmp_path: Path
) -> None:
    t = softhsm_tokens.make("yibao-tls-check", purposes=("sign", "kek"))
    ok(cli(t, "keygen", "--purpose", "tls", "--version", "2026-11"))
    listed = json.loads(ok(cli(t, "list", "--json")))
    assert [k["label"].split("/")[0] for k in listed] == ["kek", "sign", "tls"]
    assert "ok   key tls/2026-11: non-extractable, sign-only ec-p256" in ok(cli(t, "check"))
    # Someone with the user PIN plants an extractable, decrypting "tls" key in the token.
    with t.open(pool_size=1) as tok:
        from pkcs11 import KeyType, Mechanism, MechanismFlag
        from pkcs11.util.ec import encode_named_curve_parameters

        tok.call(
            lambda ws: ws.p11.generate_keypair(
                KeyType.EC,
                mechanism=Mechanism.EC_KEY_PAIR_GEN,
                label="tls/2001-01",
                id=b"tls/2001-01",
                store=True,
                capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY | MechanismFlag.DERIVE,
                public_template={Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
                private_template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True},
            )
        )
    proc = cli(t, "check")
    assert proc.returncode == 1
    assert "FAIL key tls/2001-01: CKA_EXTRACTABLE is not false" in proc.stdout, proc.stdout
    assert "CKA_DERIVE is true" in proc.stdout
    proc = cli(t, "csr", "--purpose", "tls", "--label", "tls/2001-01", "--subject", "CN=x")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "tls/2001-01 breaks the TLS key policy" in proc.stderr

"""``yibao-hsm`` end to end against the patched SoftHSM, and its bad inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hsm.sm.signature import Signature
from hsm.sm.sm2 import Sm2PublicKey
from hsm.sm2 import HostVerifier
from tests.hsm_fixtures import CLI, REPO, Env, write_secret

LABEL = "yibao-cli"

WRONG_TYPE_KEY = """
import sys
from pkcs11 import Attribute, MechanismFlag
from hsm.token import HsmToken, TokenConfig

module, label, pin_file = sys.argv[1:]
with HsmToken.open(TokenConfig(module=module, token_label=label, user_pin_file=pin_file)) as tok:
    tok.call(
        lambda ws: ws.p11.generate_key(
            tok.mechs.key_type("sm4"),
            128,
            mechanism=tok.mechs.mech("sm4_keygen"),
            label="sign/2001-01",
            store=True,
            capabilities=MechanismFlag.ENCRYPT,
            template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False},
        )
    )
"""


@pytest.fixture(scope="module")
def cli_token(hsm_env: Env) -> Env:
    proc = hsm_env.cli("init-token", "--so-pin-file", str(hsm_env.so_pin_file), label=LABEL)
    assert proc.returncode == 0, proc.stderr
    assert "initialised token 'yibao-cli'" in proc.stdout
    return hsm_env


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return proc.stdout


@pytest.mark.slow
def test_end_to_end(cli_token: Env, tmp_path: Path) -> None:
    e = cli_token
    gen = json.loads(
        ok(e.cli("keygen", "--purpose", "sign", "--version", "2026-10", "--json", label=LABEL))
    )
    assert gen["label"] == "sign/2026-10" and gen["state"] == "active"
    ok(e.cli("keygen", "--purpose", "kek", label=LABEL))
    listed = json.loads(ok(e.cli("list", "--json", label=LABEL)))
    by_label = {k["label"]: k for k in listed}
    assert by_label["sign/2026-10"]["attributes"]["extractable"] is False
    assert by_label["sign/2026-10"]["fingerprint_sha256"]
    # export-public: PEM SPKI that OpenSSL reads as an SM2 key
    pem = ok(e.cli("export-public", label=LABEL))
    pub = tmp_path / "pub.pem"
    pub.write_text(pem)
    text = subprocess.run(
        ["openssl", "pkey", "-pubin", "-in", str(pub), "-noout", "-text"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "SM2" in text
    key = Sm2PublicKey.from_pem(pem)
    assert key.fingerprint() == by_label["sign/2026-10"]["fingerprint_sha256"]
    # csr: OpenSSL accepts it with the default distinguishing ID
    csr = tmp_path / "csr.pem"
    ok(
        e.cli(
            "csr",
            "--subject",
            "CN=yibao-sidecar,O=Example Hospital,C=CN",
            "--out",
            str(csr),
            label=LABEL,
        )
    )
    v = subprocess.run(
        [
            "openssl",
            "req",
            "-verify",
            "-in",
            str(csr),
            "-noout",
            "-vfyopt",
            "distid:1234567812345678",
        ],
        capture_output=True,
        text=True,
    )
    assert "verify OK" in v.stdout + v.stderr
    # without -vfyopt OpenSSL 3.0 uses an empty ID (documented in hsm/x509.py)
    v = subprocess.run(
        ["openssl", "req", "-verify", "-in", str(csr), "-noout"], capture_output=True, text=True
    )
    assert "verify failure" in v.stdout + v.stderr
    # import-cert: a certificate issued by an OpenSSL SM2 CA for our CSR
    ca_key, ca_crt, crt = tmp_path / "ca.key", tmp_path / "ca.crt", tmp_path / "leaf.crt"
    subprocess.run(
        [
            "openssl",
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:SM2",
            "-out",
            str(ca_key),
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            "openssl",
            "req",
            "-new",
            "-x509",
            "-key",
            str(ca_key),
            "-sm3",
            "-subj",
            "/CN=Test CA",
            "-days",
            "30",
            "-out",
            str(ca_crt),
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            "openssl",
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(ca_crt),
            "-CAkey",
            str(ca_key),
            "-sm3",
            "-days",
            "30",
            "-out",
            str(crt),
            "-vfyopt",
            "distid:1234567812345678",
            "-CAcreateserial",
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    ok(e.cli("import-cert", "--cert", str(crt), label=LABEL))
    listed = json.loads(ok(e.cli("list", "--json", label=LABEL)))
    assert {k["label"]: k for k in listed}["sign/2026-10"]["has_certificate"] is True
    # a certificate for another key is refused
    ok(e.cli("rotate", "--purpose", "sign", label=LABEL))
    bad = e.cli("import-cert", "--cert", str(crt), label=LABEL)
    assert bad.returncode == 1 and "does not match key" in bad.stderr
    # rotate kept the old version for verification, retire makes it unusable
    states = {k["label"]: k["state"] for k in json.loads(ok(e.cli("list", "--json", label=LABEL)))}
    assert states["sign/2026-10"] == "previous"
    assert list(states.values()).count("active") == 2  # one sign, one kek
    ok(e.cli("retire", "--label", "sign/2026-10", label=LABEL))
    states = {k["label"]: k["state"] for k in json.loads(ok(e.cli("list", "--json", label=LABEL)))}
    assert states["sign/2026-10"] == "retired"
    # check: all good
    report = json.loads(ok(e.cli("check", "--json", label=LABEL)))
    assert report["ok"] is True
    assert {c["check"] for c in report["checks"]} >= {
        "user PIN file",
        "mechanisms",
        "active sign key",
        "active kek key",
    }


def test_csr_signature_is_valid_sm2_over_the_info(cli_token: Env, tmp_path: Path) -> None:
    from asn1crypto import csr as a_csr
    from asn1crypto import pem as a_pem

    out = ok(cli_token.cli("csr", "--subject", "CN=x,C=CN", label=LABEL))
    _, _, der = a_pem.unarmor(out.encode())
    req = a_csr.CertificationRequest.load(der)
    assert req["signature_algorithm"]["algorithm"].dotted == "1.2.156.10197.1.501"
    info = req["certification_request_info"]
    key = Sm2PublicKey.from_spki_der(info["subject_pk_info"].dump())
    HostVerifier().verify(key, info.dump(), Signature.from_der(req["signature"].native))


def test_check_fails_on_readable_pin_file(cli_token: Env, tmp_path: Path) -> None:
    loose = write_secret(tmp_path / "loose.pin", cli_token.user_pin_file.read_text().strip(), 0o644)
    proc = cli_token.cli("check", label=LABEL, pin_file=loose)
    assert proc.returncode == 1
    assert "FAIL user PIN file" in proc.stdout and "0644" in proc.stdout


def _one_line(proc: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert proc.stderr.endswith("\n") and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("yibao-hsm: ")
    for f in fragments:
        assert f in proc.stderr, proc.stderr


def test_bad_inputs_one_line_each(cli_token: Env, tmp_path: Path) -> None:
    e = cli_token
    missing_pin = tmp_path / "nope.pin"
    _one_line(
        e.cli("list", label=LABEL, pin_file=missing_pin), 2, str(missing_pin), "does not exist"
    )
    loose = write_secret(tmp_path / "loose.pin", "whatever-1", 0o640)
    _one_line(e.cli("list", label=LABEL, pin_file=loose), 1, str(loose), "group or others")
    _one_line(
        e.cli("list", label=LABEL, module=tmp_path / "libnone.so"),
        2,
        "libnone.so",
        "does not exist",
    )
    _one_line(e.cli("list", label="no-such-token"), 4, "'no-such-token'", "yibao-pkg", LABEL)
    _one_line(e.cli("export-public", "--label", "sign/1999-01", label=LABEL), 4, "sign/1999-01")
    _one_line(e.cli("retire", "--label", "kek/1999-01", label=LABEL), 4, "kek/1999-01")
    # wrong key type: an SM4 key stored under a sign label (made with the package's API, in a
    # process of its own: this process's SoftHSM may predate the CLI's token)
    made = subprocess.run(
        [sys.executable, "-c", WRONG_TYPE_KEY, str(e.lib), LABEL, str(e.user_pin_file)],
        capture_output=True,
        text=True,
        timeout=120,
        env=e.env(),
        check=False,
    )
    assert made.returncode == 0, made.stderr
    _one_line(
        e.cli("export-public", "--label", "sign/2001-01", label=LABEL),
        4,
        "sign/2001-01",
        "SECRET_KEY",
    )
    _one_line(
        e.cli("list", "--profile", "sansec-swpkcs11", label=LABEL),
        3,
        "sm4_keygen (SANSEC_SM4_KEY_GEN 0x80000107)",
        "sm2_sign_e",
    )
    _one_line(e.cli("list", "--profile", "vendor-x", label=LABEL), 2, "'vendor-x'", "softhsm-sm")
    _one_line(e.cli("keygen", "--purpose", "mac", label=LABEL), 2, "--purpose")
    _one_line(e.cli("frobnicate", common=False), 2, "frobnicate")
    _one_line(e.cli("list", common=False), 2, "module")
    _one_line(e.cli("csr", "--subject", "XX=1", label=LABEL), 2, "XX=1")
    _one_line(
        e.cli("import-cert", "--cert", str(tmp_path / "none.pem"), label=LABEL), 2, "none.pem"
    )
    same = write_secret(tmp_path / "same.pin", "identical-pin")
    _one_line(
        e.cli("init-token", "--so-pin-file", str(same), label="another", pin_file=same),
        2,
        "must differ",
    )
    no_tty = e.cli("init-token", label="another")  # no --so-pin-file, stdin is not a TTY
    _one_line(no_tty, 2, "SO PIN", "not a terminal")
    cfg = tmp_path / "bad.toml"
    cfg.write_text("modul = 'x'\n")
    _one_line(
        subprocess.run(
            [*CLI, "list", "--config", str(cfg)],
            capture_output=True,
            text=True,
            env=e.env(),
            cwd=REPO,
        ),
        2,
        "unknown keys: modul",
    )


@pytest.mark.parametrize(
    "command",
    [
        ("init-token",),
        ("keygen", "--purpose", "sign"),
        ("rotate", "--purpose", "sign"),
        ("retire", "--label", "sign/2001-01"),
        ("import-cert", "--cert", "/nonexistent/cert.pem"),
    ],
    ids=lambda c: c[0],
)
def test_a_command_that_changes_the_token_needs_the_profile_named(
    cli_token: Env, command: tuple[str, ...]
) -> None:
    before = ok(cli_token.cli("list", "--json", label=LABEL))
    argv = [*CLI, *command, "--module", str(cli_token.lib), "--token-label", LABEL,
            "--user-pin-file", str(cli_token.user_pin_file)]  # fmt: skip
    proc = subprocess.run(
        argv, capture_output=True, text=True, env=cli_token.env(), cwd=REPO, timeout=120,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    _one_line(proc, 2, f"{command[0]} changes the token", "--profile", "sansec-swpkcs11")
    assert "softhsm-sm" in proc.stderr  # listed among the choices, never taken silently
    assert ok(cli_token.cli("list", "--json", label=LABEL)) == before  # nothing was changed


def test_read_only_commands_still_run_without_a_profile(cli_token: Env) -> None:
    argv = [*CLI, "list", "--module", str(cli_token.lib), "--token-label", LABEL,
            "--user-pin-file", str(cli_token.user_pin_file)]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, env=cli_token.env(), cwd=REPO)
    assert proc.returncode == 0, proc.stderr


def test_config_file_supplies_the_common_options(cli_token: Env, tmp_path: Path) -> None:
    cfg = tmp_path / "hsm.toml"
    cfg.write_text(
        f'module = "{cli_token.lib}"\ntoken_label = "{LABEL}"\nprofile = "softhsm-sm"\n'
        f'user_pin_file = "{cli_token.user_pin_file}"\n'
    )
    proc = subprocess.run(
        [*CLI, "--config", str(cfg), "list", "--json"],
        capture_output=True,
        text=True,
        env=cli_token.env(),
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    assert any(k["label"].startswith("sign/") for k in json.loads(proc.stdout))


@pytest.mark.slow
def test_audit_and_pseudonym_keys(hsm_env: Env, tmp_path: Path) -> None:
    """The audit trail's keys: an SM2 ``audit`` pair and an HMAC-SM3 ``pseudonym`` secret."""
    label = "yibao-audit-keys"
    ok(hsm_env.cli("init-token", "--so-pin-file", str(hsm_env.so_pin_file), label=label))
    for purpose in ("sign", "kek", "audit", "pseudonym"):
        ok(hsm_env.cli("keygen", "--purpose", purpose, "--version", "2026-11", label=label))
    keys = {k["label"]: k for k in json.loads(ok(hsm_env.cli("list", "--json", label=label)))}
    assert keys["pseudonym/2026-11"]["key_type"] == "GENERIC_SECRET"
    assert keys["pseudonym/2026-11"]["attributes"]["extractable"] is False
    assert keys["audit/2026-11"]["fingerprint_sha256"] != keys["sign/2026-11"]["fingerprint_sha256"]
    pem = tmp_path / "audit.pem"
    ok(hsm_env.cli("export-public", "--label", "audit/2026-11", "--out", str(pem), label=label))
    assert (
        Sm2PublicKey.from_pem(pem.read_bytes()).fingerprint()
        == (keys["audit/2026-11"]["fingerprint_sha256"])
    )
    refused = hsm_env.cli("export-public", "--label", "pseudonym/2026-11", label=label)
    assert refused.returncode != 0 and "not an SM2 key pair" in refused.stderr
    ok(hsm_env.cli("rotate", "--purpose", "pseudonym", "--version", "2026-12", label=label))
    states = {
        k["label"]: k["state"] for k in json.loads(ok(hsm_env.cli("list", "--json", label=label)))
    }
    assert states["pseudonym/2026-11"] == "previous" and states["pseudonym/2026-12"] == "active"
    report = json.loads(ok(hsm_env.cli("check", "--json", label=label)))
    assert report["ok"] is True
    assert {"active audit key", "active pseudonym key"} <= {c["check"] for c in report["checks"]}

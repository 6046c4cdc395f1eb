"""The platform's signing certificate, checked against the CA before its key is used.

Every certificate here is made at test time with the OpenSSL 3 command line (3.0.19 when
written). The flags that matter for SM2 in OpenSSL 3.0:

- keys: ``openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:SM2``;
- signing a certificate or CSR: ``-sm3 -sigopt distid:1234567812345678``. Without ``-sigopt``
  OpenSSL 3.0 signs with an EMPTY SM2 user ID, which the GM/T default-ID verifiers (this one
  included) refuse (``test_a_certificate_signed_with_openssls_empty_default_id_is_refused``);
- ``openssl x509 -req`` checks the CSR's own SM2 signature, which needs
  ``-vfyopt distid:1234567812345678`` (omitted for a P-256 CSR);
- ``openssl verify -CAfile ca.pem -vfyopt distid:1234567812345678 leaf.pem`` verifies the chain.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import pytest
from asn1crypto import pem, x509  # type: ignore[import-untyped]

from hsm.sm.signature import der_to_raw
from hsm.sm.sm2 import HostSm2Verifier
from hsm.sm2 import Sm2Signer as HsmSigner
from sidecar.config import ConfigError, MessageSecurityConfig
from sidecar.keys.security_link import build_sealing
from sidecar.platform.certificates import CertificateRefused, load_platform_key
from sidecar.platform.sealing import EnvelopeSignature

DISTID = "distid:1234567812345678"
SM2_SIGN = ["-sm3", "-sigopt", DISTID]

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


@dataclass
class Pki:
    directory: Path

    def openssl(self, *args: str) -> None:
        result = subprocess.run(
            ["openssl", *args], cwd=self.directory, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr

    def path(self, name: str) -> Path:
        return self.directory / name

    def read(self, *names: str) -> bytes:
        return b"".join(self.path(name).read_bytes() for name in names)

    def key(self, name: str, curve: str = "SM2") -> str:
        self.openssl("genpkey", "-algorithm", "EC", "-pkeyopt", f"ec_paramgen_curve:{curve}",
                     "-out", f"{name}.key")  # fmt: skip
        return f"{name}.key"

    def root(self, name: str, cn: str, *, days: int = 30, sign: list[str] = SM2_SIGN) -> None:
        self.key(name)
        self.openssl("req", "-x509", "-new", "-key", f"{name}.key", *sign, "-subj", f"/CN={cn}",
                     "-days", str(days), "-addext", "basicConstraints=critical,CA:TRUE",
                     "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                     "-out", f"{name}.pem")  # fmt: skip

    def issue(
        self,
        name: str,
        cn: str,
        issuer: str,
        *,
        days: int = 10,
        curve: str = "SM2",
        extensions: str = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n",
        sign: list[str] = SM2_SIGN,
    ) -> None:
        """``name``.pem for a new ``name``.key, signed by ``issuer``.key/.pem."""
        self.key(name, curve)
        csr_sign = SM2_SIGN if curve == "SM2" else ["-sha256"]
        self.openssl("req", "-new", "-key", f"{name}.key", *csr_sign, "-subj", f"/CN={cn}",
                     "-out", f"{name}.csr")  # fmt: skip
        self.path(f"{name}.ext").write_text(extensions)
        check_csr = ["-vfyopt", DISTID] if curve == "SM2" else []
        self.openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{issuer}.pem",
                     "-CAkey", f"{issuer}.key", "-CAcreateserial", *sign, *check_csr,
                     "-days", str(days), "-extfile", f"{name}.ext",
                     "-out", f"{name}.pem")  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    pki = Pki(tmp_path_factory.mktemp("pki"))
    pki.root("ca", "Platform Test CA")
    pki.issue("leaf", "Platform Signer", "ca")
    pki.root("foreign", "Foreign CA")
    pki.issue("foreign-leaf", "Foreign Signer", "foreign")
    pki.root("impostor", "Platform Test CA")  # same name as the CA, another key
    pki.issue("impostor-leaf", "Impostor Signer", "impostor")
    pki.issue("p256-leaf", "P256 Signer", "ca", curve="P-256")
    pki.issue("not-a-ca", "Ordinary Signer", "ca")
    pki.issue("under-not-a-ca", "Signed By Ordinary", "not-a-ca")
    pki.issue("intermediate", "Platform Intermediate CA", "ca",
              extensions="basicConstraints=critical,CA:TRUE,pathlen:0\n"
                         "keyUsage=critical,keyCertSign\n")  # fmt: skip
    pki.issue("deep-leaf", "Deep Signer", "intermediate")
    pki.issue("encipher-only", "Encipherment Signer", "ca",
              extensions="keyUsage=critical,keyEncipherment\n")  # fmt: skip
    pki.root("short-ca", "Short Lived CA", days=1)
    pki.issue("long-leaf", "Long Signer", "short-ca", days=10)
    pki.root("empty-id-ca", "Empty ID CA", sign=["-sm3"])
    pki.issue("empty-id-leaf", "Empty ID Signer", "empty-id-ca", sign=["-sm3"])
    return pki


def now() -> datetime:
    return datetime.now(UTC)


def refused(certificate: bytes, anchors: bytes, when: datetime | None = None) -> str:
    with pytest.raises(CertificateRefused) as caught:
        load_platform_key(certificate, anchors, now=when or now())
    message = str(caught.value)
    assert "\n" not in message
    return message


def validity(pki: Pki, name: str) -> tuple[datetime, datetime]:
    cert = x509.Certificate.load(pem.unarmor(pki.read(f"{name}.pem"))[2])
    period = cert["tbs_certificate"]["validity"]
    return period["not_before"].native, period["not_after"].native


def test_openssl_itself_accepts_the_chain_with_the_default_id(pki: Pki) -> None:
    pki.openssl("verify", "-CAfile", "ca.pem", "-vfyopt", DISTID, "leaf.pem")


def test_a_valid_leaf_gives_the_key_that_verifies_the_leafs_signatures(pki: Pki) -> None:
    key = load_platform_key(pki.read("leaf.pem"), pki.read("ca.pem"), now=now())
    message = "医保 answer body".encode()
    pki.path("message.bin").write_bytes(message)
    pki.openssl("dgst", "-sm3", "-sign", "leaf.key", "-sigopt", DISTID,
                "-out", "message.sig", "message.bin")  # fmt: skip
    raw = der_to_raw(pki.read("message.sig"))
    verifier = HostSm2Verifier(key)
    assert verifier.verify(message, raw)
    assert not verifier.verify(message + b"!", raw)


def test_the_ca_bundle_may_hold_several_cas_and_intermediates(pki: Pki) -> None:
    bundle = pki.read("foreign.pem", "intermediate.pem", "ca.pem")
    expected = load_platform_key(pki.read("leaf.pem"), pki.read("ca.pem"), now=now())
    assert load_platform_key(pki.read("leaf.pem"), bundle, now=now()) == expected
    load_platform_key(pki.read("deep-leaf.pem"), bundle, now=now())


def test_intermediates_may_follow_the_leaf_in_the_certificate_file(pki: Pki) -> None:
    load_platform_key(pki.read("deep-leaf.pem", "intermediate.pem"), pki.read("ca.pem"), now=now())
    message = refused(pki.read("deep-leaf.pem"), pki.read("ca.pem"))
    assert "'Deep Signer'" in message and "'Platform Intermediate CA'" in message


def test_an_expired_leaf_is_refused(pki: Pki) -> None:
    _, not_after = validity(pki, "leaf")
    message = refused(pki.read("leaf.pem"), pki.read("ca.pem"), not_after + timedelta(seconds=1))
    assert message.startswith("certificate 'Platform Signer': has expired (notAfter 20")


def test_a_leaf_not_yet_valid_is_refused(pki: Pki) -> None:
    not_before, _ = validity(pki, "leaf")
    message = refused(pki.read("leaf.pem"), pki.read("ca.pem"), not_before - timedelta(hours=1))
    assert message.startswith("certificate 'Platform Signer': is not valid yet (notBefore 20")


def test_an_expired_ca_is_refused_even_when_the_leaf_is_valid(pki: Pki) -> None:
    message = refused(
        pki.read("long-leaf.pem"), pki.read("short-ca.pem"), now() + timedelta(days=3)
    )
    assert message.startswith("certificate 'Short Lived CA': has expired")


def test_a_leaf_of_a_foreign_ca_is_refused(pki: Pki) -> None:
    message = refused(pki.read("foreign-leaf.pem"), pki.read("ca.pem"))
    assert message == (
        "certificate 'Foreign Signer': issuer 'Foreign CA' is not among the trusted CAs "
        "(a foreign or missing CA)"
    )


def test_a_leaf_of_a_ca_with_the_same_name_but_another_key_is_refused(pki: Pki) -> None:
    message = refused(pki.read("impostor-leaf.pem"), pki.read("ca.pem"))
    assert message == (
        "certificate 'Impostor Signer': signature does not verify with the key of "
        "'Platform Test CA'"
    )


def test_a_tampered_signature_is_refused(pki: Pki) -> None:
    der = bytearray(pem.unarmor(pki.read("leaf.pem"))[2])
    der[-1] ^= 0x01  # the last byte of s, inside the signature BIT STRING
    message = refused(bytes(der), pki.read("ca.pem"))
    assert message == (
        "certificate 'Platform Signer': signature does not verify with the key of "
        "'Platform Test CA'"
    )


def test_a_tampered_body_is_refused(pki: Pki) -> None:
    text = pki.read("leaf.pem")
    der = pem.unarmor(text)[2]
    forged = der.replace(b"Platform Signer", b"Platform Signes")
    assert forged != der
    message = refused(forged, pki.read("ca.pem"))
    assert message.startswith("certificate 'Platform Signes': signature does not verify")


def test_a_leaf_with_a_non_sm2_key_is_refused(pki: Pki) -> None:
    message = refused(pki.read("p256-leaf.pem"), pki.read("ca.pem"))
    assert message == (
        "certificate 'P256 Signer': public key is not an SM2 key "
        "(id-ecPublicKey on curve 1.2.156.10197.1.301)"
    )


def test_an_issuer_that_is_not_a_ca_is_refused(pki: Pki) -> None:
    message = refused(pki.read("under-not-a-ca.pem", "not-a-ca.pem"), pki.read("ca.pem"))
    assert message == (
        "certificate 'Ordinary Signer': is not a CA (basicConstraints cA is not TRUE) "
        "but issues certificates"
    )


def test_a_leaf_whose_key_usage_excludes_signing_is_refused(pki: Pki) -> None:
    message = refused(pki.read("encipher-only.pem"), pki.read("ca.pem"))
    assert message == "certificate 'Encipherment Signer': keyUsage does not allow digitalSignature"


def test_a_certificate_signed_with_openssls_empty_default_id_is_refused(pki: Pki) -> None:
    message = refused(pki.read("empty-id-leaf.pem"), pki.read("empty-id-ca.pem"))
    assert message.startswith("certificate 'Empty ID Signer': signature does not verify")


def test_garbage_is_refused_by_name_not_with_a_traceback(pki: Pki) -> None:
    assert refused(b"", pki.read("ca.pem")) == (
        "certificate 'platform certificate file': holds no certificate"
    )
    bad = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    assert refused(bad, pki.read("ca.pem")).startswith(
        "certificate 'platform certificate file #1': is not a valid X.509 certificate"
    )
    assert refused(pki.read("leaf.pem"), pki.read("leaf.key")) == (
        "certificate 'trust anchor file': holds no certificate"
    )


def test_now_must_carry_a_timezone(pki: Pki) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        load_platform_key(pki.read("leaf.pem"), pki.read("ca.pem"), now=datetime(2026, 1, 1))


# --- configuration -------------------------------------------------------------------------

SM4_KEY = "0123456789abcdeffedcba9876543210"


def security(pki: Pki, tmp_path: Path, **keys: object) -> MessageSecurityConfig:
    sm4 = tmp_path / "sm4.key"
    sm4.write_text(SM4_KEY)
    return MessageSecurityConfig.model_validate(
        {"scheme": "envelope-signature", "sm4_key_file": sm4, **keys}
    )


def fake_signer() -> HsmSigner:
    return cast(HsmSigner, object())  # build_sealing only stores it


def test_build_sealing_takes_the_key_from_a_checked_certificate(pki: Pki, tmp_path: Path) -> None:
    config = security(pki, tmp_path, platform_certificate_file=pki.path("leaf.pem"),
                      platform_ca_file=pki.path("ca.pem"))  # fmt: skip
    assert isinstance(build_sealing(config, fake_signer()), EnvelopeSignature)


def test_build_sealing_refuses_a_bad_certificate_in_one_line(pki: Pki, tmp_path: Path) -> None:
    config = security(pki, tmp_path, platform_certificate_file=pki.path("foreign-leaf.pem"),
                      platform_ca_file=pki.path("ca.pem"))  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        build_sealing(config, fake_signer())
    assert str(caught.value) == (
        "config: platform.security.platform_certificate_file: certificate 'Foreign Signer': "
        "issuer 'Foreign CA' is not among the trusted CAs (a foreign or missing CA)"
    )


def test_build_sealing_names_an_unreadable_ca_file(pki: Pki, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.pem"
    config = security(pki, tmp_path, platform_certificate_file=pki.path("leaf.pem"),
                      platform_ca_file=missing)  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        build_sealing(config, fake_signer())
    assert str(caught.value) == (
        f"config: platform.security.platform_ca_file: cannot read {missing}: "
        "No such file or directory"
    )


def test_the_key_is_configured_exactly_one_way(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="one way: platform_certificate_file with"):
        security(pki, tmp_path, platform_certificate_file=pki.path("leaf.pem"),
                 platform_ca_file=pki.path("ca.pem"),
                 platform_public_key_file=pki.path("leaf.key"))  # fmt: skip
    with pytest.raises(ValueError, match=r"envelope-signature needs platform_ca_file \["):
        security(pki, tmp_path, platform_certificate_file=pki.path("leaf.pem"))
    with pytest.raises(ValueError, match=r"envelope-signature needs platform_certificate_file \["):
        security(pki, tmp_path, platform_ca_file=pki.path("ca.pem"))
    # with neither way, the message keeps the wording the start-up tests pin
    with pytest.raises(ValueError, match="needs platform_public_key_file, sm4_key_file"):
        MessageSecurityConfig.model_validate({"scheme": "envelope-signature"})
    with pytest.raises(ValueError, match="needs platform_ca_file, app_id, app_secret_file"):
        MessageSecurityConfig.model_validate(
            {"scheme": "mobile-payment", "platform_certificate_file": pki.path("leaf.pem")}
        )
    # "plain" needs no key at all
    MessageSecurityConfig.model_validate({"scheme": "plain"})
    # the raw public key alone is still a complete configuration
    security(pki, tmp_path, platform_public_key_file=pki.path("leaf.key"))

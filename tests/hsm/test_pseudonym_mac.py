"""The pseudonym function of profiles without HMAC-SM3 (Sansec): SM4-CBC-MAC in the token.

The shipped Sansec profile numbers SM4-ECB/CBC but no HMAC-SM3. These tests run the same code
path on the patched SoftHSM with a profile that has softhsm-sm's numbers, no ``sm3_hmac`` and
``pseudonym = "sm4-cbc-mac"``: known answers (computed with OpenSSL, kept in
tests/vectors/sm.json under ``sm4_cbc_mac``) through the host reference and through the token,
the key's rules, and its states enforced by the token.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pkcs11 import Attribute, ObjectClass

from hsm.errors import ConfigError, HsmError, PolicyError
from hsm.keys import KeyStore
from hsm.profiles import load_profile, parse_profile
from hsm.pseudonym import cbc_mac_input, host_sm4_cbc_mac
from hsm.token import HsmToken
from sidecar.audit.hsm_keys import HsmPseudonyms, open_pseudonyms
from tests.conftest import REPO
from tests.hsm_fixtures import SoftHsmTokens
from tests.vectors import SM4_CBC_MAC

VECTORS = SM4_CBC_MAC
SOFTHSM_PROFILE = REPO / "hsm" / "profiles" / "softhsm-sm.toml"
MAC_LABEL = "yibao-mac"


def _mac_profile(directory: Path) -> Path:
    """softhsm-sm's numbers without sm3_hmac, pseudonyms by SM4-CBC-MAC (as Sansec's)."""
    text = SOFTHSM_PROFILE.read_text()
    text = re.sub(r"(?m)^sm3_hmac .*$", "", text)
    text = text.replace('pseudonym = "hmac-sm3"', 'pseudonym = "sm4-cbc-mac"')
    text = text.replace('name = "softhsm-sm"', 'name = "softhsm-sm4-mac"')
    path = directory / "softhsm-sm4-mac.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def mac_token(
    softhsm_tokens: SoftHsmTokens, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HsmToken]:
    profile = _mac_profile(tmp_path_factory.mktemp("mac-profile"))
    assert load_profile(str(profile)).pseudonym == "sm4-cbc-mac"
    token = softhsm_tokens.make(MAC_LABEL, profile=profile).open()
    yield token
    token.close()


def test_the_shipped_profiles_choose_a_pseudonym_function_they_have() -> None:
    assert load_profile("softhsm-sm").pseudonym == "hmac-sm3"
    sansec = load_profile("sansec-swpkcs11")
    assert sansec.pseudonym == "sm4-cbc-mac" and "sm3_hmac" not in sansec.mechanisms


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('pseudonym = "hmac-sm3"', 'pseudonym = "sha1"'), "pseudonym must be one of"),
        (("sm3_hmac ", "# sm3_hmac "), "pseudonym hmac-sm3 needs mechanisms.sm3_hmac"),
    ],
)
def test_a_profile_whose_pseudonym_function_it_cannot_compute_is_refused(
    change: tuple[str, str], message: str
) -> None:
    text = SOFTHSM_PROFILE.read_text().replace(*change)
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_profile(text, source="vendor.toml")


def test_the_input_is_prefix_free_and_block_aligned() -> None:
    for length in range(0, 70):
        formatted = cbc_mac_input(bytes(length))
        assert len(formatted) % 16 == 0
        assert int.from_bytes(formatted[:16], "big") == length
        assert formatted[16 + length] == 0x80
    # a message and its padded form differ (padding method 2 is injective)
    assert cbc_mac_input(b"a") != cbc_mac_input(b"a\x80" + bytes(14))


def test_the_host_reference_matches_the_known_answers() -> None:
    # (the SM4 under it is checked against GB/T 32907 A.1 in tests/hsm/sm/test_sm4.py)
    assert len(VECTORS["vectors"]) >= 10
    for vector in VECTORS["vectors"]:
        mac = host_sm4_cbc_mac(bytes.fromhex(vector["key"]), bytes.fromhex(vector["message"]))
        assert mac.hex() == vector["mac"]


def _known_key(token: HsmToken, label: str, key_hex: str, **extra: bool) -> None:
    """An SM4 key of known value in the token (the known-answer test only; real keys are
    generated inside and never known)."""

    def make(ws: Any) -> None:
        ws.p11.create_object(
            {
                Attribute.CLASS: ObjectClass.SECRET_KEY,
                Attribute.KEY_TYPE: token.mechs.key_type("sm4"),
                Attribute.TOKEN: False,
                Attribute.PRIVATE: True,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.ENCRYPT: True,
                Attribute.DECRYPT: False,
                Attribute.WRAP: False,
                Attribute.UNWRAP: False,
                Attribute.LABEL: label,
                Attribute.VALUE: bytes.fromhex(key_hex),
                **{getattr(Attribute, name.upper()): value for name, value in extra.items()},
            }
        )

    token.call(make)


def test_the_token_computes_the_known_answers(mac_token: HsmToken) -> None:
    labels: dict[str, str] = {}
    for vector in VECTORS["vectors"]:
        if vector["key"] not in labels:
            labels[vector["key"]] = f"kat/{len(labels)}"
            _known_key(mac_token, labels[vector["key"]], vector["key"])
    assert len(labels) == 2
    for vector in VECTORS["vectors"]:
        prf = HsmPseudonyms(mac_token, labels[vector["key"]])
        assert prf.mechanism == "sm4-cbc-mac"
        assert prf.pseudonym_blocking(bytes.fromhex(vector["message"])) == vector["mac"]


def test_a_mac_key_that_could_decrypt_is_refused(mac_token: HsmToken) -> None:
    _known_key(mac_token, "kat/decrypts", "00" * 16, decrypt=True)
    with pytest.raises(PolicyError, match="kat/decrypts has DECRYPT on"):
        HsmPseudonyms(mac_token, "kat/decrypts").pseudonym_blocking(b"1:110105194912310021")


def test_pseudonym_keys_are_encrypt_only_and_their_states_are_kept_by_the_token(
    mac_token: HsmToken,
) -> None:
    keys = KeyStore(mac_token)
    first = keys.generate("pseudonym", "2026-01")
    assert first.key_type == "SM4" and first.state == "active"
    assert first.exportable_reasons() == []
    message = b"1:110105194912310021"
    prf = open_pseudonyms(mac_token)
    assert prf.key_label == "pseudonym/2026-01"
    before = prf.pseudonym_blocking(message)
    assert len(before) == 32 and before == prf.pseudonym_blocking(message)

    def usage(ws: Any) -> dict[str, bool]:
        objs = list(
            ws.p11.get_objects(
                {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: "pseudonym/2026-01"}
            )
        )
        names = ("ENCRYPT", "DECRYPT", "WRAP", "UNWRAP", "DERIVE", "SENSITIVE", "EXTRACTABLE")
        return {n: bool(objs[0][getattr(Attribute, n)]) for n in names}

    assert mac_token.call(usage) == {
        "ENCRYPT": True,
        "DECRYPT": False,
        "WRAP": False,
        "UNWRAP": False,
        "DERIVE": False,
        "SENSITIVE": True,
        "EXTRACTABLE": False,
    }

    keys.rotate("pseudonym", "2026-02")
    states = {k.label: k.state for k in keys.versions("pseudonym")}
    assert states == {"pseudonym/2026-01": "previous", "pseudonym/2026-02": "active"}
    # the previous key still finds old pseudonyms; the new one gives others
    assert prf.pseudonym_blocking(message) == before
    assert open_pseudonyms(mac_token).pseudonym_blocking(message) != before
    keys.retire("pseudonym/2026-01")
    assert mac_token.call(usage)["ENCRYPT"] is False  # retirement is enforced by the token
    for _ in range(4):  # every worker session: the token refuses, or the key lacks encrypt
        with pytest.raises(HsmError):
            prf.pseudonym_blocking(message)
    assert keys.get("pseudonym/2026-01").state == "retired"

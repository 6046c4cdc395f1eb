"""Profiles as data, and the way vendor numbers enter python-pkcs11's enums."""

from __future__ import annotations

from enum import IntEnum

import pkcs11
import pytest

from hsm.errors import ConfigError, MissingMechanisms
from hsm.mechanisms import EnumConflict, extend_int_enum, register
from hsm.profiles import (
    OPERATIONS,
    OPTIONAL_OPERATIONS,
    known_profiles,
    load_profile,
    parse_profile,
)
from tests.hsm_fixtures import TOKEN_LABEL, Env, find_one


def test_shipped_profiles_load_and_cover_every_operation() -> None:
    assert {"softhsm-sm", "sansec-swpkcs11"} <= set(known_profiles())
    for name in known_profiles():
        profile = load_profile(name)
        assert set(OPERATIONS) <= set(profile.mechanisms) <= {*OPERATIONS, *OPTIONAL_OPERATIONS}
        assert set(profile.key_types) == {"sm2", "sm4"}


def test_softhsm_profile_numbers() -> None:
    p = load_profile("softhsm-sm")
    assert {k: e.value for k, e in p.mechanisms.items()} == {
        "sm2_keygen": 0x80008001,
        "sm2_sign_e": 0x80008104,
        "sm2_sign_message": 0x80008100,
        "sm2_verify_e": 0x80008104,
        "sm3_digest": 0x80009001,
        "sm4_keygen": 0x8000A001,
        "sm4_ecb": 0x8000A100,
        "sm4_cbc": 0x8000A200,
        "sm4_wrap": 0x8000A100,
        "sm3_hmac": 0x80009002,  # our patch's own number (not in swpkcs11.h)
    }
    assert {k: e.value for k, e in p.key_types.items()} == {"sm2": 0x80000004, "sm4": 0x80000006}


def test_unknown_profile_names_it_and_lists_known() -> None:
    with pytest.raises(ConfigError) as exc:
        load_profile("thales-lunatic")
    msg = str(exc.value)
    assert "'thales-lunatic'" in msg
    for name in known_profiles():
        assert name in msg
    assert "\n" not in msg


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("name = 'x'\n[key_types]\n", "[mechanisms] table is missing"),
        ("name = 'x'\n[mechanisms]\nsm2_keygen = { name = 'A', value = 1 }\n", "lacks sm2_sign_e"),
        ("name = 'x'\nsignature_encoding = 'ber'\n", "signature_encoding"),
        ("name = ", "not valid TOML"),
    ],
)
def test_bad_profile_documents(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[")):
        parse_profile(text, source="t.toml")


class Colour(IntEnum):
    RED = 1


def test_extend_is_idempotent_and_behaves_like_a_member() -> None:
    m1 = extend_int_enum(Colour, "VENDOR_GREEN", 0x80000001)
    m2 = extend_int_enum(Colour, "VENDOR_GREEN", 0x80000001)
    assert m1 is m2 is Colour.VENDOR_GREEN  # type: ignore[attr-defined]
    assert Colour(0x80000001) is m1 and Colour["VENDOR_GREEN"] is m1
    assert isinstance(m1, Colour) and int(m1) == 0x80000001 and m1.name == "VENDOR_GREEN"
    assert list(Colour).count(m1) == 1


def test_extend_refuses_rebinding_a_name_or_a_number() -> None:
    extend_int_enum(Colour, "VENDOR_BLUE", 0x80000002)
    with pytest.raises(EnumConflict, match="already means 0x80000002"):
        extend_int_enum(Colour, "VENDOR_BLUE", 0x80000003)
    with pytest.raises(EnumConflict, match=r"already Colour\.VENDOR_BLUE"):
        extend_int_enum(Colour, "VENDOR_TEAL", 0x80000002)
    with pytest.raises(EnumConflict, match=r"already Colour\.RED"):
        extend_int_enum(Colour, "VENDOR_RED", 1)
    with pytest.raises(ConfigError, match="CK_ULONG"):
        extend_int_enum(Colour, "HUGE", 1 << 64)
    with pytest.raises(ConfigError, match="not a valid enum member name"):
        extend_int_enum(Colour, "lower-case", 5)


def test_register_profile_into_python_pkcs11() -> None:
    reg = register(load_profile("softhsm-sm"))
    again = register(load_profile("softhsm-sm"))
    assert reg.mech("sm2_sign_e") is again.mech("sm2_sign_e") is pkcs11.Mechanism(0x80008104)
    assert pkcs11.KeyType(0x80000004) is reg.key_type("sm2")
    with pytest.raises(ConfigError, match="no mechanism for sm9_sign"):
        reg.mech("sm9_sign")


def test_vendor_key_type_reads_back_from_a_token_key(token) -> None:
    from pkcs11 import Attribute, ObjectClass

    def read(ws):
        key = find_one(ws, ObjectClass.PRIVATE_KEY, "sign/2026-01")
        return key.key_type, key[Attribute.KEY_TYPE]

    kt, attr = token.call(read)
    assert kt is token.mechs.key_type("sm2") and attr is kt
    assert kt.name == "SM2"


def test_missing_mechanisms_are_all_named(hsm_env: Env, token) -> None:
    from hsm.pin import read_pin_file
    from hsm.token import HsmToken

    with pytest.raises(MissingMechanisms) as exc:
        HsmToken(
            module_path=str(hsm_env.lib),
            token_label=TOKEN_LABEL,
            profile=load_profile("sansec-swpkcs11"),
            pin=read_pin_file(hsm_env.user_pin_file),
        )
    msg = str(exc.value)
    for fragment in (
        "sm2_sign_e (SM2_SIGN_NO_DER 0x80008105)",
        "sm4_keygen (SANSEC_SM4_KEY_GEN",
        "sm4_ecb",
        "sm4_cbc",
        "sm4_wrap",
        "sansec-swpkcs11",
        TOKEN_LABEL,
    ):
        assert fragment in msg
    assert "sm2_keygen" not in msg and "sm3_digest" not in msg

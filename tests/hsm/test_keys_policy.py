"""Key lifecycle in the token and the non-exportability policy."""

from __future__ import annotations

import pytest
from pkcs11 import Attribute, MechanismFlag, ObjectClass
from pkcs11 import exceptions as p11e

from hsm.errors import ConfigError, HsmError, NotFound, PolicyError, WrongKeyType
from hsm.keys import KeyStore, next_version, parse_label
from hsm.sm2 import HostVerifier, Sm2Signer
from tests.hsm_fixtures import find_one


def test_labels_and_versions() -> None:
    import datetime as dt

    assert parse_label("sign/2026-11") == ("sign", "2026-11")
    assert parse_label("kek/2026-11.3") == ("kek", "2026-11.3")
    for bad in ("sign", "sign/26-11", "mac/2026-11", "sign/2026-11/x"):
        with pytest.raises(ConfigError, match="not <purpose>/<version>"):
            parse_label(bad)
    today = dt.date(2026, 11, 26)
    assert next_version([], today) == "2026-11"
    assert next_version(["2026-11"], today) == "2026-11.2"
    assert next_version(["2026-11", "2026-11.2"], today) == "2026-11.3"


def test_generated_keys_have_the_required_attributes(token) -> None:
    for k in KeyStore(token).versions():
        assert k.attributes["token"] and k.attributes["private"] and k.attributes["sensitive"]
        assert k.attributes["extractable"] is False and k.attributes["never_extractable"] is True


def test_private_key_value_cannot_be_read(token) -> None:
    def read(ws):
        key = find_one(ws, ObjectClass.PRIVATE_KEY, "sign/2026-01")
        return key[Attribute.VALUE]

    with pytest.raises(p11e.AttributeSensitive):
        token.call(read)

    def read_kek(ws):
        return find_one(ws, ObjectClass.SECRET_KEY, "kek/2026-01")[Attribute.VALUE]

    with pytest.raises(p11e.AttributeSensitive):
        token.call(read_kek)


def test_extractable_key_made_on_purpose_is_refused(token) -> None:
    label = "sign/2020-01"

    def make(ws):
        ws.p11.generate_keypair(
            token.mechs.key_type("sm2"),
            mechanism=token.mechs.mech("sm2_keygen"),
            label=label,
            id=label.encode(),
            store=True,
            capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
            private_template={
                Attribute.EXTRACTABLE: True,
                Attribute.SENSITIVE: False,
                Attribute.SIGN: False,
            },
        )

    token.call(make)
    store = KeyStore(token)
    with pytest.raises(PolicyError) as exc:
        store.usable(label)
    assert label in str(exc.value) and "CKA_EXTRACTABLE" in str(exc.value)
    assert "CKA_SENSITIVE" in str(exc.value)
    assert [k.label for k in store.versions("sign") if k.exportable_reasons()] == [label]

    def cleanup(ws):
        for o in ws.p11.get_objects({Attribute.LABEL: label}):
            o.destroy()

    token.call(cleanup)


def test_wrong_key_type_names_label_and_type(token) -> None:
    label = "kek/2019-01"

    def make(ws):  # an SM2 pair under a kek label: a secret key is expected
        ws.p11.generate_keypair(
            token.mechs.key_type("sm2"),
            mechanism=token.mechs.mech("sm2_keygen"),
            label=label,
            store=False,
            capabilities=MechanismFlag.SIGN,
        )

    token.call(make)
    with pytest.raises(WrongKeyType) as exc:
        KeyStore(token).get(label)
    assert label in str(exc.value) and "PRIVATE_KEY" in str(exc.value)

    def make_generic(ws):  # right class, wrong key type
        ws.p11.create_object(
            {
                Attribute.CLASS: ObjectClass.SECRET_KEY,
                Attribute.KEY_TYPE: token.mechs.key_type("sm4").__class__.GENERIC_SECRET,
                Attribute.TOKEN: False,
                Attribute.LABEL: "kek/2019-02",
                Attribute.VALUE: b"k" * 16,
            }
        )

    token.call(make_generic)
    with pytest.raises(WrongKeyType) as exc:
        KeyStore(token).get("kek/2019-02")
    assert "kek/2019-02" in str(exc.value) and "GENERIC_SECRET" in str(exc.value)
    with pytest.raises(NotFound, match="sign/1999-01"):
        KeyStore(token).get("sign/1999-01")


def test_rotate_and_retire_are_enforced_by_the_token(token) -> None:
    store = KeyStore(token)
    old = store.active("sign")
    stale = token.call(  # found while still active: python-pkcs11 gave it sign()
        lambda ws: find_one(ws, ObjectClass.PRIVATE_KEY, old.label)
    )
    new = store.rotate("sign")
    assert store.active("sign").label == new.label
    assert store.get(old.label).state == "previous"
    # the token itself refuses to sign with the previous version
    prev = Sm2Signer(token, old.label, old.public_key)
    with pytest.raises(HsmError, match=old.label):
        prev.sign_blocking(b"x")

    with pytest.raises(p11e.PKCS11Error):  # bypassing the package: the token refuses
        token.call(lambda ws: stale.sign(b"\x00" * 32, mechanism=token.mechs.mech("sm2_sign_e")))
    sig = Sm2Signer(token, new.label, new.public_key).sign_blocking(b"x")
    HostVerifier().verify(new.public_key, b"x", sig)
    with pytest.raises(ConfigError, match="rotate first"):
        store.retire(new.label)
    retired = store.retire(old.label)
    assert retired.state == "retired"
    with pytest.raises(PolicyError, match=f"{old.label} is retired"):
        store.usable(old.label)
    with pytest.raises(ConfigError, match="already has active key"):
        store.generate("sign")

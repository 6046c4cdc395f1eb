"""Keys by purpose and version, with their lifecycle state kept in the token.

Naming: every key is ``<purpose>/<version>`` (``sign/2026-11``, ``kek/2026-11``);
that string is both CKA_LABEL and CKA_ID of all objects of the key (SM2
private key, SM2 public key, X.509 certificate), the usual PKCS#11 way to tie
a key pair and its certificate together.

State lives in the token's own usage attributes, so nothing outside the HSM
needs a backup and the HSM itself enforces it even against a caller that
bypasses this package:

============  =============================  ===============================
state          sign (SM2 pair)                kek (SM4)
============  =============================  ===============================
active         private CKA_SIGN = true        CKA_ENCRYPT = CKA_DECRYPT = true
previous       private CKA_SIGN = false,      CKA_ENCRYPT = false,
               public CKA_VERIFY = true       CKA_DECRYPT = true
retired        CKA_SIGN = CKA_VERIFY = false   CKA_ENCRYPT = CKA_DECRYPT = false
============  =============================  ===============================

``pseudonym`` keys follow the profile's pseudonym function (:mod:`hsm.pseudonym`): for
``hmac-sm3`` a generic secret whose state is CKA_SIGN (active) / CKA_VERIFY (previous); for
``sm4-cbc-mac`` an SM4 key whose only capability is CKA_ENCRYPT (on while active or previous,
off when retired, so the token enforces retirement), with CKA_SIGN / CKA_VERIFY recording active /
previous (no SM4 signing mechanism is in any profile) and never CKA_DECRYPT, WRAP or UNWRAP.

``previous`` versions still verify old signatures / unwrap old data keys.
CKA_START_DATE records creation, CKA_END_DATE retirement.  One active version
per purpose is an invariant: :meth:`KeyStore.rotate` creates the new version
active and then demotes the old one; if a crash leaves two active versions,
the highest version wins and ``yibao-hsm check`` reports the inconsistency.

Key policy: keys are generated with CKA_TOKEN, CKA_PRIVATE, CKA_SENSITIVE and
CKA_EXTRACTABLE=false; before a private or secret key is used it must still
be non-extractable (CKA_EXTRACTABLE false, CKA_SENSITIVE true and, where the
module has it, CKA_NEVER_EXTRACTABLE true) or it is refused by label.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import exceptions as p11e

from hsm.errors import ConfigError, NotFound, PolicyError, TokenError, WrongKeyType
from hsm.sm.sm2 import Sm2PublicKey

if TYPE_CHECKING:
    from hsm.mechanisms import Registered
    from hsm.token import HsmToken, WorkerSession

Purpose = Literal["sign", "kek", "audit", "pseudonym"]
State = Literal["active", "previous", "retired"]
PURPOSES: tuple[Purpose, ...] = ("sign", "kek", "audit", "pseudonym")
#: SM2 key pairs: ``sign`` (the platform's signatures), ``audit`` (audit-trail checkpoints).
SM2_PURPOSES: frozenset[Purpose] = frozenset({"sign", "audit"})
#: Pseudonym-function keys (hsm.pseudonym): HMAC-SM3 secrets or encrypt-only SM4 MAC keys.
HMAC_PURPOSES: frozenset[Purpose] = frozenset({"pseudonym"})
PSEUDONYM_KEY_BITS = 256
_VERSION = re.compile(r"^[0-9]{4}-[0-9]{2}(?:\.[0-9]+)?$")
T = TypeVar("T")


def parse_label(label: str) -> tuple[Purpose, str]:
    """Split ``purpose/version``; the error names the label."""
    purpose, sep, version = label.partition("/")
    if not sep or purpose not in PURPOSES or not _VERSION.match(version):
        raise ConfigError(
            f"key label {label!r} is not <purpose>/<version> "
            f"(purpose {', '.join(PURPOSES)}, version YYYY-MM or YYYY-MM.N)"
        )
    return _PURPOSE_OF[purpose], version


_PURPOSE_OF: dict[str, Purpose] = {p: p for p in PURPOSES}


def _expected_key_type(mechs: Registered, purpose: Purpose, pseudonym: str) -> KeyType:
    if purpose in SM2_PURPOSES:
        return mechs.key_type("sm2")
    if purpose in HMAC_PURPOSES and pseudonym == "hmac-sm3":
        return KeyType.GENERIC_SECRET
    return mechs.key_type("sm4")


def version_key(version: str) -> tuple[int, int, int]:
    ym, _, seq = version.partition(".")
    year, month = ym.split("-")
    return int(year), int(month), int(seq or 0)


def next_version(existing: list[str], today: dt.date | None = None) -> str:
    """``YYYY-MM`` of today, or ``YYYY-MM.N`` if that month already has versions."""
    today = today or dt.datetime.now(dt.UTC).date()
    base = f"{today.year:04d}-{today.month:02d}"
    if base not in existing:
        return base
    n = 2
    while f"{base}.{n}" in existing:
        n += 1
    return f"{base}.{n}"


def exportable_reasons(
    attributes: Mapping[str, bool | None], *, forbidden: Sequence[str] = ()
) -> list[str]:
    """Why a key with these attributes could leave the token, or be used to move secrets out of
    it (each ``forbidden`` capability that is on); empty if it cannot. The one key policy of every
    purpose."""
    reasons = []
    if attributes.get("extractable") is not False:
        reasons.append("CKA_EXTRACTABLE is not false")
    if attributes.get("sensitive") is not True:
        reasons.append("CKA_SENSITIVE is not true")
    if attributes.get("never_extractable") is False:
        reasons.append("CKA_NEVER_EXTRACTABLE is false")
    reasons += [f"CKA_{name.upper()} is true" for name in forbidden if attributes.get(name)]
    return reasons


@dataclass(frozen=True)
class KeyInfo:
    """What ``list`` shows about one key version."""

    label: str
    purpose: Purpose
    version: str
    state: State
    key_type: str
    attributes: dict[str, bool | None] = field(default_factory=dict)
    public_key: Sm2PublicKey | None = None
    has_certificate: bool = False
    start_date: str | None = None
    end_date: str | None = None

    @property
    def fingerprint(self) -> str | None:
        return self.public_key.fingerprint() if self.public_key else None

    def exportable_reasons(self) -> list[str]:
        """Why the key could leave the token (empty if it cannot)."""
        return exportable_reasons(self.attributes)

    def as_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "purpose": self.purpose,
            "version": self.version,
            "state": self.state,
            "key_type": self.key_type,
            "attributes": self.attributes,
            "fingerprint_sha256": self.fingerprint,
            "has_certificate": self.has_certificate,
            "start_date": self.start_date,
            "end_date": self.end_date,
        }


def _attr(obj: Any, attribute: Attribute) -> Any:
    """One attribute, or None if the module does not have it."""
    try:
        return obj[attribute]
    except (p11e.PKCS11Error, ValueError):  # absent, sensitive, or an empty CK_DATE
        return None


def _date(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, dt.date) else None


def _class_name(obj: Any) -> str:
    cls = obj[Attribute.CLASS]
    return str(cls.name) if isinstance(cls, ObjectClass) else f"{int(cls):#x}"


def key_type_name(obj: Any) -> str:
    try:
        kt = obj[Attribute.KEY_TYPE]
    except ValueError:  # a vendor number no profile registered
        return "unknown vendor key type"
    return str(kt.name) if isinstance(kt, KeyType) else f"{int(kt):#x}"


class KeyStore:
    """Key lifecycle on one token; every call runs on a pool session."""

    def __init__(self, token: HsmToken) -> None:
        self.token = token
        self.mechs = token.mechs
        self.pseudonym = token.profile.pseudonym

    def _call(self, fn: Callable[[WorkerSession], T]) -> T:
        try:
            return self.token.call(fn)
        except p11e.PKCS11Error as exc:
            raise TokenError(f"token {self.token.token_label!r}: {type(exc).__name__}") from None

    # ------------------------------------------------------------------ lookup
    def _primary(self, ws: WorkerSession, label: str, purpose: Purpose) -> Any:
        """The private key (sign) or secret key (kek) called ``label``, type-checked."""
        cls = ObjectClass.PRIVATE_KEY if purpose in SM2_PURPOSES else ObjectClass.SECRET_KEY
        expected = _expected_key_type(self.mechs, purpose, self.pseudonym)
        objs = list(ws.p11.get_objects({Attribute.CLASS: cls, Attribute.LABEL: label}))
        if not objs:
            others = list(ws.p11.get_objects({Attribute.LABEL: label}))
            if others:
                found = ", ".join(sorted({_class_name(o) for o in others}))
                raise WrongKeyType(f"key {label} is {found}, expected {cls.name}")
            raise NotFound(f"key label {label} not found on token {self.token.token_label!r}")
        if len(objs) > 1:
            raise ConfigError(f"key label {label} names {len(objs)} {cls.name} objects")
        obj = objs[0]
        try:
            kt = obj[Attribute.KEY_TYPE]
        except ValueError:
            kt = None
        if kt != expected:
            raise WrongKeyType(
                f"key {label} has key type {key_type_name(obj)}, expected {expected.name}"
            )
        return obj

    def _public(self, ws: WorkerSession, label: str) -> Any:
        objs = list(
            ws.p11.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.LABEL: label})
        )
        return objs[0] if objs else None

    def _info(self, ws: WorkerSession, label: str) -> KeyInfo:
        purpose, version = parse_label(label)
        obj = self._primary(ws, label, purpose)
        attrs: dict[str, bool | None] = {
            "token": _attr(obj, Attribute.TOKEN),
            "private": _attr(obj, Attribute.PRIVATE),
            "sensitive": _attr(obj, Attribute.SENSITIVE),
            "extractable": _attr(obj, Attribute.EXTRACTABLE),
            "never_extractable": _attr(obj, Attribute.NEVER_EXTRACTABLE),
            "always_sensitive": _attr(obj, Attribute.ALWAYS_SENSITIVE),
            "local": _attr(obj, Attribute.LOCAL),
        }
        public_key = None
        has_cert = False
        if purpose in SM2_PURPOSES:
            pub = self._public(ws, label)
            if pub is None:
                raise NotFound(f"public key of {label} not found on the token")
            public_key = Sm2PublicKey.from_ec_point(pub[Attribute.EC_POINT])
            can_use = bool(_attr(obj, Attribute.SIGN))
            can_check = bool(_attr(pub, Attribute.VERIFY))
            has_cert = bool(
                list(
                    ws.p11.get_objects(
                        {Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.LABEL: label}
                    )
                )
            )
        elif purpose in HMAC_PURPOSES:
            computes = self.pseudonym == "hmac-sm3" or bool(_attr(obj, Attribute.ENCRYPT))
            can_use = computes and bool(_attr(obj, Attribute.SIGN))
            can_check = computes and bool(_attr(obj, Attribute.VERIFY))
        else:
            can_use = bool(_attr(obj, Attribute.ENCRYPT))
            can_check = bool(_attr(obj, Attribute.DECRYPT))
        # SoftHSM cannot read CK_DATEs of private objects back; use the public key's.
        dated = self._public(ws, label) if purpose in SM2_PURPOSES else obj
        state: State = "active" if can_use else "previous" if can_check else "retired"
        return KeyInfo(
            label=label,
            purpose=purpose,
            version=version,
            state=state,
            key_type=key_type_name(obj),
            attributes=attrs,
            public_key=public_key,
            has_certificate=has_cert,
            start_date=_date(_attr(dated, Attribute.START_DATE)),
            end_date=_date(_attr(dated, Attribute.END_DATE)),
        )

    def _labels(self, ws: WorkerSession, purpose: Purpose | None) -> list[str]:
        """Labels of SM2 private keys and secret keys named by purpose (others are ignored)."""
        labels = set()
        for p in PURPOSES:
            if purpose is not None and p != purpose:
                continue
            cls = ObjectClass.PRIVATE_KEY if p in SM2_PURPOSES else ObjectClass.SECRET_KEY
            for obj in ws.p11.get_objects({Attribute.CLASS: cls}):
                label = _attr(obj, Attribute.LABEL) or ""
                lp, sep, v = label.partition("/")
                if sep and lp == p and _VERSION.match(v):
                    labels.add(label)
        return sorted(labels, key=lambda lb: (lb.split("/")[0], version_key(lb.split("/")[1])))

    def versions(self, purpose: Purpose | None = None) -> list[KeyInfo]:
        """Every version (optionally of one purpose), oldest first."""
        return self._call(lambda ws: [self._info(ws, lb) for lb in self._labels(ws, purpose)])

    def get(self, label: str) -> KeyInfo:
        parse_label(label)
        return self._call(lambda ws: self._info(ws, label))

    def active(self, purpose: Purpose) -> KeyInfo:
        """The active version, checked to be non-exportable."""
        actives = [k for k in self.versions(purpose) if k.state == "active"]
        if not actives:
            raise NotFound(f"no active {purpose} key on token {self.token.token_label!r}")
        info = actives[-1]
        self.require_non_exportable(info)
        return info

    def usable(self, label: str) -> KeyInfo:
        """A key that may be used (active or previous), checked to be non-exportable."""
        info = self.get(label)
        if info.state == "retired":
            raise PolicyError(f"key {label} is retired")
        self.require_non_exportable(info)
        return info

    @staticmethod
    def require_non_exportable(info: KeyInfo) -> None:
        reasons = info.exportable_reasons()
        if reasons:
            raise PolicyError(f"key {info.label} may be exported: {'; '.join(reasons)}")

    # ------------------------------------------------------------------ lifecycle
    def _generate(self, ws: WorkerSession, purpose: Purpose, label: str) -> None:
        today = dt.datetime.now(dt.UTC).date()
        common = {
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.MODIFIABLE: True,  # state changes flip usage flags
            Attribute.START_DATE: today,
        }
        if purpose in SM2_PURPOSES:
            ws.p11.generate_keypair(
                self.mechs.key_type("sm2"),
                mechanism=self.mechs.mech("sm2_keygen"),
                id=label.encode(),
                label=label,
                store=True,
                capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
                public_template={
                    Attribute.EC_PARAMS: bytes.fromhex("06082a811ccf5501822d"),
                    Attribute.PRIVATE: False,
                    Attribute.START_DATE: today,
                },
                private_template={**common, Attribute.DERIVE: False, Attribute.DECRYPT: False},
            )
        elif purpose in HMAC_PURPOSES and self.pseudonym == "sm4-cbc-mac":
            self.mechs.mech("sm4_cbc")
            ws.p11.generate_key(
                self.mechs.key_type("sm4"),
                128,
                mechanism=self.mechs.mech("sm4_keygen"),
                id=label.encode(),
                label=label,
                store=True,
                capabilities=MechanismFlag.ENCRYPT | MechanismFlag.SIGN | MechanismFlag.VERIFY,
                template={
                    **common,
                    Attribute.ENCRYPT: True,  # the MAC: one C_Encrypt with sm4_cbc
                    Attribute.DECRYPT: False,
                    Attribute.WRAP: False,
                    Attribute.UNWRAP: False,
                    Attribute.DERIVE: False,
                    Attribute.SIGN: True,  # state: active
                    Attribute.VERIFY: True,
                },
            )
        elif purpose in HMAC_PURPOSES:
            self.mechs.mech("sm3_hmac")  # the profile must offer HMAC-SM3 before we make a key
            ws.p11.generate_key(
                KeyType.GENERIC_SECRET,
                PSEUDONYM_KEY_BITS,
                mechanism=Mechanism.GENERIC_SECRET_KEY_GEN,
                id=label.encode(),
                label=label,
                store=True,
                capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
                template={
                    **common,
                    Attribute.WRAP: False,
                    Attribute.UNWRAP: False,
                    Attribute.ENCRYPT: False,
                    Attribute.DECRYPT: False,
                },
            )
        else:
            ws.p11.generate_key(
                self.mechs.key_type("sm4"),
                128,
                mechanism=self.mechs.mech("sm4_keygen"),
                id=label.encode(),
                label=label,
                store=True,
                capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
                template={**common, Attribute.WRAP: False, Attribute.UNWRAP: False},
            )

    def _set_state(self, ws: WorkerSession, label: str, state: State) -> None:
        purpose, _ = parse_label(label)
        obj = self._primary(ws, label, purpose)
        if purpose in SM2_PURPOSES:
            pub = self._public(ws, label)
            obj[Attribute.SIGN] = state == "active"
            if pub is not None:
                pub[Attribute.VERIFY] = state != "retired"
        elif purpose in HMAC_PURPOSES:
            obj[Attribute.SIGN] = state == "active"
            obj[Attribute.VERIFY] = state != "retired"
            if self.pseudonym == "sm4-cbc-mac":
                obj[Attribute.ENCRYPT] = state != "retired"
        else:
            obj[Attribute.ENCRYPT] = state == "active"
            obj[Attribute.DECRYPT] = state != "retired"
        if state == "retired":
            for o in (obj, self._public(ws, label) if purpose in SM2_PURPOSES else None):
                if o is not None:
                    with contextlib.suppress(p11e.PKCS11Error):  # informational only
                        o[Attribute.END_DATE] = dt.datetime.now(dt.UTC).date()

    def generate(self, purpose: Purpose, version: str | None = None) -> KeyInfo:
        """Create the first version of ``purpose`` (refused if one is active)."""
        current = self.versions(purpose)
        active = [k for k in current if k.state == "active"]
        if active:
            raise ConfigError(f"{purpose} already has active key {active[-1].label}; use rotate")
        return self._create(purpose, version, [k.version for k in current])

    def _create(self, purpose: Purpose, version: str | None, existing: list[str]) -> KeyInfo:
        version = version or next_version(existing)
        label = f"{purpose}/{version}"
        parse_label(label)
        if version in existing:
            raise ConfigError(f"key {label} already exists")
        self._call(lambda ws: self._generate(ws, purpose, label))
        return self.get(label)

    def rotate(self, purpose: Purpose, version: str | None = None) -> KeyInfo:
        """New version becomes active; the old active one is kept as ``previous``."""
        current = self.versions(purpose)
        new = self._create(purpose, version, [k.version for k in current])
        for k in current:
            if k.state == "active":
                self._demote(k.label)
        return self.get(new.label)

    def _demote(self, label: str) -> None:
        self._call(lambda ws: self._set_state(ws, label, "previous"))

    def retire(self, label: str) -> KeyInfo:
        """The version can no longer be used at all (the token refuses it)."""
        info = self.get(label)
        if info.state == "active":
            raise ConfigError(f"key {label} is the active {info.purpose} key; rotate first")
        self._call(lambda ws: self._set_state(ws, label, "retired"))
        return self.get(label)

    # ------------------------------------------------------------------ certificates
    def import_certificate(self, label: str, cert_der: bytes) -> None:
        """Store an X.509 certificate next to key ``label`` after matching its key."""
        from hsm.x509 import certificate_public_key, certificate_subject_der

        info = self.get(label)
        if info.purpose not in SM2_PURPOSES or info.public_key is None:
            raise WrongKeyType(f"key {label} is not an SM2 signing key")
        cert_key = certificate_public_key(cert_der)
        if cert_key != info.public_key:
            raise PolicyError(f"certificate public key does not match key {label}")

        def store(ws: WorkerSession) -> None:
            for old in ws.p11.get_objects(
                {Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.LABEL: label}
            ):
                old.destroy()
            ws.p11.create_object(
                {
                    Attribute.CLASS: ObjectClass.CERTIFICATE,
                    Attribute.CERTIFICATE_TYPE: 0,  # CKC_X_509
                    Attribute.TOKEN: True,
                    Attribute.PRIVATE: False,
                    Attribute.LABEL: label,
                    Attribute.ID: label.encode(),
                    Attribute.SUBJECT: certificate_subject_der(cert_der),
                    Attribute.VALUE: cert_der,
                }
            )

        self._call(store)

    def certificate(self, label: str) -> bytes:
        def fetch(ws: WorkerSession) -> bytes:
            objs = list(
                ws.p11.get_objects(
                    {Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.LABEL: label}
                )
            )
            if not objs:
                raise NotFound(f"no certificate stored for key {label}")
            return bytes(objs[0][Attribute.VALUE])

        return self._call(fetch)

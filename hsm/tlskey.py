"""The TLS client key of the platform tunnel, generated and used only inside the token.

Labels follow the other purposes: ``tls/<version>`` is CKA_LABEL and CKA_ID of the private key,
its public key and (after ``import-cert``) its X.509 certificate. The key type comes from the
profile (``tls_key = "ec-p256"``, the default, or ``"rsa-2048"`` where the platform requires
RSA): EC P-256 (CKM_EC_KEY_PAIR_GEN, secp256r1, signed with CKM_ECDSA over a SHA-256 digest) or
RSA 2048 (CKM_RSA_PKCS_KEY_PAIR_GEN, CKM_SHA256_RSA_PKCS). The private key is sensitive,
non-extractable and may only sign: no decrypt, derive, wrap or unwrap.

OpenSSL uses the key through libp11's ``pkcs11`` engine during the TLS handshake
(:func:`pkcs11_uri` names it; see docs/hsm.md). The newest version is the one in use; older
ones stay until the certificate of the new one is installed at the platform.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from asn1crypto import csr as asn1_csr  # type: ignore[import-untyped]
from asn1crypto import keys as asn1_keys
from cryptography import x509 as cx509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import exceptions as p11e
from pkcs11.util.ec import encode_ecdsa_signature, encode_named_curve_parameters

from hsm.errors import ConfigError, MalformedInput, NotFound, PolicyError, TokenError
from hsm.keys import exportable_reasons, next_version, version_key
from hsm.x509 import parse_subject

if TYPE_CHECKING:
    from hsm.token import HsmToken, WorkerSession

TlsKeyKind = Literal["ec-p256", "rsa-2048"]
TLS_KEY_KINDS: tuple[TlsKeyKind, ...] = ("ec-p256", "rsa-2048")
TLS_PURPOSE = "tls"
RSA_BITS = 2048
_P256_DER_PARAMS = encode_named_curve_parameters("secp256r1")


def _attr(obj: Any, attribute: Attribute) -> Any:
    try:
        return obj[attribute]
    except (p11e.PKCS11Error, ValueError):
        return None


def pkcs11_uri(token_label: str, key_label: str) -> str:
    """RFC 7512 URI of the private key, as libp11's engine takes it; never holds a PIN."""
    return (
        f"pkcs11:token={quote(token_label, safe='')};"
        f"object={quote(key_label, safe='')};type=private"
    )


@dataclass(frozen=True)
class TlsKeyInfo:
    """One TLS key version: its type, its public key (SPKI DER) and its policy attributes."""

    label: str
    kind: TlsKeyKind
    spki_der: bytes
    attributes: dict[str, bool | None]
    has_certificate: bool

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.spki_der).hexdigest()

    def exportable_reasons(self) -> list[str]:
        """Why the TLS key could leave the token or serve another purpose (empty if neither)."""
        return exportable_reasons(self.attributes, forbidden=("decrypt", "derive", "unwrap"))

    def as_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "purpose": TLS_PURPOSE,
            "key_type": self.kind,
            "attributes": self.attributes,
            "fingerprint_sha256": self.fingerprint,
            "has_certificate": self.has_certificate,
        }


def spki_of_certificate(cert_der: bytes) -> bytes:
    """The certificate's SubjectPublicKeyInfo, DER, in cryptography's canonical encoding."""
    try:
        cert = cx509.load_der_x509_certificate(cert_der)
        key = cert.public_key()
    except ValueError:
        raise MalformedInput("certificate is not a DER X.509 certificate") from None
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise MalformedInput("certificate key is neither EC nor RSA")
    return key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _spki_of_public_object(pub: Any, kind: TlsKeyKind) -> bytes:
    key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey
    if kind == "ec-p256":
        raw = bytes(pub[Attribute.EC_POINT])
        if len(raw) == 67 and raw[:2] == b"\x04\x41":  # a DER OCTET STRING, as PKCS#11 says
            raw = raw[2:]
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    else:
        n = int.from_bytes(bytes(pub[Attribute.MODULUS]), "big")
        e = int.from_bytes(bytes(pub[Attribute.PUBLIC_EXPONENT]), "big")
        key = rsa.RSAPublicNumbers(e, n).public_key()
    return key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


ENGINE_PACKAGE = "libengine-pkcs11-openssl"


def find_pkcs11_engine() -> Path:
    """libp11's ``pkcs11`` engine for OpenSSL 3 (Debian's ``libengine-pkcs11-openssl``)."""
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    for candidate in (
        Path("/usr/lib", multiarch, "engines-3", "pkcs11.so"),
        Path("/usr/lib/engines-3/pkcs11.so"),
        Path("/usr/lib64/engines-3/pkcs11.so"),
    ):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"OpenSSL pkcs11 engine not found: install {ENGINE_PACKAGE}")


def openssl_engine_config(module: str | Path, engine: Path) -> str:
    """An OpenSSL configuration that loads the ``pkcs11`` engine for ``module``: no PIN, no
    key, nothing secret (the PIN reaches the engine through its UI method, never a file)."""
    for name, value in (("module", str(module)), ("engine", str(engine))):
        if any(c in value for c in '\n\r"$#\\') or not value.startswith("/"):
            raise ConfigError(f"{name} path {value!r} must be absolute without quotes, $ or #")
    return (
        "openssl_conf = openssl_init\n"
        "[openssl_init]\n"
        "engines = engine_section\n"
        "[engine_section]\n"
        "pkcs11 = pkcs11_section\n"
        "[pkcs11_section]\n"
        "engine_id = pkcs11\n"
        f"dynamic_path = {engine}\n"
        f"MODULE_PATH = {module}\n"
        "init = 1\n"
    )


class TlsKeyStore:
    """Generate, inspect and certify the TLS client key; every call runs on a pool session."""

    def __init__(self, token: HsmToken) -> None:
        self.token = token
        self.kind: TlsKeyKind = token.profile.tls_key

    def _call(self, fn: Callable[[WorkerSession], Any]) -> Any:
        try:
            return self.token.call(fn)
        except p11e.PKCS11Error as exc:
            raise TokenError(f"token {self.token.token_label!r}: {type(exc).__name__}") from None

    # ------------------------------------------------------------------ lookup
    def _objects(self, ws: WorkerSession, cls: ObjectClass, label: str) -> list[Any]:
        return list(ws.p11.get_objects({Attribute.CLASS: cls, Attribute.LABEL: label}))

    def _private(self, ws: WorkerSession, label: str) -> Any:
        objs = self._objects(ws, ObjectClass.PRIVATE_KEY, label)
        if not objs:
            raise NotFound(f"key label {label} not found on token {self.token.token_label!r}")
        if len(objs) > 1:
            raise ConfigError(f"key label {label} names {len(objs)} private keys")
        return objs[0]

    def _kind_of(self, obj: Any, label: str) -> TlsKeyKind:
        kt = _attr(obj, Attribute.KEY_TYPE)
        if kt == KeyType.EC:
            return "ec-p256"
        if kt == KeyType.RSA:
            return "rsa-2048"
        raise ConfigError(f"key {label} is neither an EC nor an RSA key")

    def _info(self, ws: WorkerSession, label: str) -> TlsKeyInfo:
        obj = self._private(ws, label)
        kind = self._kind_of(obj, label)
        pubs = self._objects(ws, ObjectClass.PUBLIC_KEY, label)
        if not pubs:
            raise NotFound(f"public key of {label} not found on the token")
        attrs: dict[str, bool | None] = {
            name: _attr(obj, attribute)
            for name, attribute in (
                ("token", Attribute.TOKEN),
                ("private", Attribute.PRIVATE),
                ("sensitive", Attribute.SENSITIVE),
                ("extractable", Attribute.EXTRACTABLE),
                ("never_extractable", Attribute.NEVER_EXTRACTABLE),
                ("always_sensitive", Attribute.ALWAYS_SENSITIVE),
                ("local", Attribute.LOCAL),
                ("sign", Attribute.SIGN),
                ("decrypt", Attribute.DECRYPT),
                ("derive", Attribute.DERIVE),
                ("unwrap", Attribute.UNWRAP),
            )
        }
        return TlsKeyInfo(
            label=label,
            kind=kind,
            spki_der=_spki_of_public_object(pubs[0], kind),
            attributes=attrs,
            has_certificate=bool(self._objects(ws, ObjectClass.CERTIFICATE, label)),
        )

    def _labels(self, ws: WorkerSession) -> list[str]:
        labels = set()
        for obj in ws.p11.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY}):
            label = _attr(obj, Attribute.LABEL) or ""
            purpose, sep, version = label.partition("/")
            if sep and purpose == TLS_PURPOSE:
                try:
                    version_key(version)
                except ValueError:
                    continue
                labels.add(label)
        return sorted(labels, key=lambda lb: version_key(lb.partition("/")[2]))

    def engine_unreadable(self) -> list[str]:
        """Labels of the token's private keys that are neither EC nor RSA (the SM2 keys).

        libp11 0.4.12 (Debian 12's ``pkcs11`` engine) enumerates every private key of the token
        before it matches the URI, and gives up at the first key type it does not know: with
        one such key in the token it finds no key at all, whatever the URI says.
        """

        def run(ws: WorkerSession) -> list[str]:
            found = []
            for obj in ws.p11.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY}):
                if _attr(obj, Attribute.KEY_TYPE) not in (KeyType.EC, KeyType.RSA):
                    found.append(str(_attr(obj, Attribute.LABEL) or "(no label)"))
            return sorted(found)

        labels: list[str] = self._call(run)
        return labels

    def versions(self) -> list[TlsKeyInfo]:
        result: list[TlsKeyInfo] = self._call(
            lambda ws: [self._info(ws, lb) for lb in self._labels(ws)]
        )
        return result

    def get(self, label: str) -> TlsKeyInfo:
        if not label.startswith(f"{TLS_PURPOSE}/"):
            raise ConfigError(f"key label {label!r} is not tls/<version>")
        info: TlsKeyInfo = self._call(lambda ws: self._info(ws, label))
        return info

    def current(self, label: str | None = None) -> TlsKeyInfo:
        """The key ``label``, or the newest TLS key; refused if it could leave the token."""
        if label is None:
            found = self.versions()
            if not found:
                raise NotFound(f"no tls key on token {self.token.token_label!r}")
            info = found[-1]
        else:
            info = self.get(label)
        reasons = info.exportable_reasons()
        if reasons:
            raise PolicyError(f"key {info.label} breaks the TLS key policy: {'; '.join(reasons)}")
        return info

    # ------------------------------------------------------------------ lifecycle
    def generate(self, version: str | None = None, today: dt.date | None = None) -> TlsKeyInfo:
        """A new version ``tls/<version>`` of the profile's key type (older ones are kept)."""
        today = today or dt.datetime.now(dt.UTC).date()
        existing = [k.label.partition("/")[2] for k in self.versions()]
        version = version or next_version(existing, today)
        try:
            version_key(version)
        except ValueError:
            raise ConfigError(f"version {version!r} is not YYYY-MM or YYYY-MM.N") from None
        if version in existing:
            raise ConfigError(f"key {TLS_PURPOSE}/{version} already exists")
        label = f"{TLS_PURPOSE}/{version}"
        self._call(lambda ws: self._generate(ws, label, today))
        return self.get(label)

    def _generate(self, ws: WorkerSession, label: str, today: dt.date) -> None:
        private = {
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.SIGN: True,
            Attribute.DECRYPT: False,
            Attribute.DERIVE: False,
            Attribute.UNWRAP: False,
            Attribute.START_DATE: today,
        }
        public: dict[Attribute, Any] = {
            Attribute.PRIVATE: False,
            Attribute.ENCRYPT: False,
            Attribute.WRAP: False,
            Attribute.START_DATE: today,
        }
        if self.kind == "ec-p256":
            ws.p11.generate_keypair(
                KeyType.EC,
                mechanism=Mechanism.EC_KEY_PAIR_GEN,
                id=label.encode(),
                label=label,
                store=True,
                capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
                public_template={**public, Attribute.EC_PARAMS: _P256_DER_PARAMS},
                private_template=private,
            )
        else:
            ws.p11.generate_keypair(
                KeyType.RSA,
                RSA_BITS,
                mechanism=Mechanism.RSA_PKCS_KEY_PAIR_GEN,
                id=label.encode(),
                label=label,
                store=True,
                capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
                public_template=public,
                private_template=private,
            )

    # ------------------------------------------------------------------ CSR and certificate
    def sign(self, label: str, message: bytes) -> tuple[str, bytes]:
        """Sign ``message`` with the key in the token: (asn1crypto algorithm name, signature)."""
        info = self.current(label)

        def run(ws: WorkerSession) -> bytes:
            key = self._private(ws, label)
            if info.kind == "ec-p256":
                raw = key.sign(hashlib.sha256(message).digest(), mechanism=Mechanism.ECDSA)
                return bytes(encode_ecdsa_signature(raw))
            return bytes(key.sign(message, mechanism=Mechanism.SHA256_RSA_PKCS))

        signature: bytes = self._call(run)
        return ("sha256_ecdsa" if info.kind == "ec-p256" else "sha256_rsa"), signature

    def csr(self, subject: str, label: str | None = None) -> tuple[TlsKeyInfo, bytes]:
        """A DER PKCS#10 request for the key, signed by it in the token."""
        name = parse_subject(subject)
        info = self.current(label)
        request_info = asn1_csr.CertificationRequestInfo(
            {
                "version": "v1",
                "subject": name,
                "subject_pk_info": asn1_keys.PublicKeyInfo.load(info.spki_der),
                "attributes": [],
            }
        )
        algorithm, signature = self.sign(info.label, request_info.dump())
        request = asn1_csr.CertificationRequest(
            {
                "certification_request_info": request_info,
                "signature_algorithm": {"algorithm": algorithm},
                "signature": signature,
            }
        )
        der: bytes = request.dump()
        return info, der

    def import_certificate(self, cert_der: bytes, label: str | None = None) -> TlsKeyInfo:
        """Store the certificate next to the key after checking it certifies that key."""
        info = self.current(label)
        if spki_of_certificate(cert_der) != info.spki_der:
            raise PolicyError(f"certificate public key does not match key {info.label}")
        subject = cx509.load_der_x509_certificate(cert_der).subject.public_bytes()

        def store(ws: WorkerSession) -> None:
            for old in self._objects(ws, ObjectClass.CERTIFICATE, info.label):
                old.destroy()
            ws.p11.create_object(
                {
                    Attribute.CLASS: ObjectClass.CERTIFICATE,
                    Attribute.CERTIFICATE_TYPE: 0,  # CKC_X_509
                    Attribute.TOKEN: True,
                    Attribute.PRIVATE: False,
                    Attribute.LABEL: info.label,
                    Attribute.ID: info.label.encode(),
                    Attribute.SUBJECT: subject,
                    Attribute.VALUE: cert_der,
                }
            )

        self._call(store)
        return self.get(info.label)

    def certificate(self, label: str) -> bytes:
        def fetch(ws: WorkerSession) -> bytes:
            objs = self._objects(ws, ObjectClass.CERTIFICATE, label)
            if not objs:
                raise NotFound(f"no certificate stored for key {label}")
            return bytes(objs[0][Attribute.VALUE])

        der: bytes = self._call(fetch)
        return der


__all__ = [
    "TLS_KEY_KINDS",
    "TLS_PURPOSE",
    "TlsKeyInfo",
    "TlsKeyKind",
    "TlsKeyStore",
    "find_pkcs11_engine",
    "openssl_engine_config",
    "pkcs11_uri",
    "spki_of_certificate",
]

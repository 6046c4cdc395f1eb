"""PKCS#10 requests signed SM2-with-SM3 by the token, and certificate checks.

The request is assembled with asn1crypto; its ``CertificationRequestInfo`` DER
is signed like any message (e = SM3(Z || DER), default user ID, GM/T 0009),
and the signature algorithm is SM2-with-SM3 (1.2.156.10197.1.501) without
parameters, as OpenSSL writes it.  The subject public key is id-ecPublicKey
with the named curve sm2p256v1 (1.2.156.10197.1.301).

OpenSSL 3.0 (3.0.19, Debian 12) checks such a request only with the ID given
explicitly: ``openssl req -verify -in csr.pem -noout -vfyopt
distid:1234567812345678`` prints "verify OK"; without ``-vfyopt`` it uses an
empty ID and prints "verify failure" (and still exits 0, so scripts must check
the text).  The tests run both.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Callable

from asn1crypto import core, csr, keys, pem, x509  # type: ignore[import-untyped]

from hsm.errors import ConfigError, MalformedInput
from hsm.sm.signature import Signature
from hsm.sm.sm2 import SM2_CURVE_OID, SM2_WITH_SM3_OID, Sm2PublicKey

_RDN_KEYS = {
    "CN": "common_name",
    "O": "organization_name",
    "OU": "organizational_unit_name",
    "C": "country_name",
    "L": "locality_name",
    "ST": "state_or_province_name",
    "SERIALNUMBER": "serial_number",
}


def parse_subject(text: str) -> x509.Name:
    """``CN=...,O=...,C=CN`` -> Name (no escaping; values may not contain commas)."""
    fields: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        name = _RDN_KEYS.get(key.strip().upper())
        if not sep or name is None or not value.strip():
            raise ConfigError(
                f"subject part {part!r} is not KEY=value with KEY in {', '.join(_RDN_KEYS)}"
            )
        fields[name] = value.strip()
    if not fields:
        raise ConfigError("subject is empty (expected e.g. CN=...,O=...,C=CN)")
    if "country_name" in fields and not re.fullmatch(r"[A-Z]{2}", fields["country_name"]):
        raise ConfigError("subject C= must be a two-letter country code")
    return x509.Name.build(fields, use_printable=True)


def _spki(public_key: Sm2PublicKey) -> keys.PublicKeyInfo:
    return keys.PublicKeyInfo.load(public_key.spki_der())


def build_csr(subject: str, public_key: Sm2PublicKey, sign: Callable[[bytes], Signature]) -> bytes:
    """DER PKCS#10 request; ``sign(message)`` returns the SM2 signature of the DER info."""
    info = csr.CertificationRequestInfo(
        {
            "version": "v1",
            "subject": parse_subject(subject),
            "subject_pk_info": _spki(public_key),
            "attributes": [],
        }
    )
    signature = sign(info.dump())
    request = csr.CertificationRequest(
        {
            "certification_request_info": info,
            "signature_algorithm": {"algorithm": SM2_WITH_SM3_OID},
            "signature": signature.to_der(),
        }
    )
    der: bytes = request.dump()
    return der


def to_pem(der: bytes, label: str) -> str:
    out: bytes = pem.armor(label, der)
    return out.decode("ascii")


def from_pem_or_der(data: bytes, label: str) -> bytes:
    """Accept PEM (``-----BEGIN <label>-----``) or DER; return DER."""
    if pem.detect(data):
        try:
            kind, _headers, der = pem.unarmor(data)
        except ValueError:
            raise MalformedInput(f"{label} PEM is malformed") from None
        if kind != label:
            raise MalformedInput(f"expected a {label} PEM block, found {kind}")
        return bytes(der)
    return data


def _load_certificate(cert_der: bytes) -> x509.Certificate:
    try:
        cert = x509.Certificate.load(cert_der, strict=True)
        cert["tbs_certificate"]["subject_public_key_info"].native  # noqa: B018 - parse now
    except (ValueError, TypeError, binascii.Error):
        raise MalformedInput("certificate is not a DER X.509 certificate") from None
    return cert


def certificate_public_key(cert_der: bytes) -> Sm2PublicKey:
    """The SM2 public key of a certificate (error if it is not an SM2 key)."""
    spki = _load_certificate(cert_der)["tbs_certificate"]["subject_public_key_info"]
    algorithm = spki["algorithm"]
    params = algorithm["parameters"]
    curve = params.chosen.dotted if isinstance(params.chosen, core.ObjectIdentifier) else None
    if algorithm["algorithm"].dotted != "1.2.840.10045.2.1" or curve != SM2_CURVE_OID:
        raise MalformedInput("certificate key is not an SM2 (sm2p256v1) public key")
    return Sm2PublicKey.from_spki_der(spki.dump())


def certificate_subject_der(cert_der: bytes) -> bytes:
    subject: bytes = _load_certificate(cert_der)["tbs_certificate"]["subject"].dump()
    return subject

"""The platform's SM2 signing key, taken from its X.509 certificate after checking the chain.

The platform signs its answers with SM2; the sidecar verifies those signatures with the public
key in the platform's signing certificate, and only after the certificate has been checked
against the CA certificates it is configured to trust (the *trust anchors*). An expired,
not-yet-valid, foreign (signed by another CA), tampered or non-SM2 certificate is refused with
:class:`CertificateRefused`, whose message names the certificate (its subject CN) and the rule
it breaks.

pyca/cryptography cannot verify SM2 certificate signatures, so certificates are parsed with
``asn1crypto`` and each signature (SM2-with-SM3, OID 1.2.156.10197.1.501) is verified over the
DER ``tbsCertificate`` with :class:`~hsm.sm.sm2.HostSm2Verifier`.

The SM2 user ID of certificate signatures is the GM/T 0009 default ``1234567812345678``
(what GM/T 0015 prescribes for certificates), configurable through ``user_id``. Beware
OpenSSL 3.0 (checked with 3.0.19): when it signs a certificate with an SM2 key and is given no
ID, it uses an EMPTY user ID (ENTL = 0), not the default; such a certificate is refused here
("signature does not verify"). Certificates must be made with ``-sigopt
distid:1234567812345678``, and ``openssl verify`` (or ``openssl x509 -req`` reading an SM2 CSR)
needs ``-vfyopt distid:1234567812345678`` to check them. The commands are in
``tests/sidecar/platform/test_certificates.py``.

Checked, for every certificate on the path from the signing certificate to a trust anchor:

- validity: ``notBefore <= now <= notAfter``;
- names chain: each certificate's issuer is the subject of the next one (RFC 5280 comparison);
- the signature algorithm is SM2-with-SM3 (outer and inner ``signature`` fields agree), and the
  signature verifies with the issuer's SM2 public key; a self-issued trust anchor's own
  signature is verified too;
- issuers are CAs: basicConstraints with ``cA`` TRUE, keyUsage (when present) allows
  keyCertSign, and pathLenConstraint (when present) is respected;
- no critical extension other than basicConstraints, keyUsage and extendedKeyUsage;
- the signing certificate's key is an SM2 key (id-ecPublicKey with the sm2p256v1 curve OID), a
  valid point, and its keyUsage (when present) allows digitalSignature.

Not checked: revocation (no CRL or OCSP), name constraints and certificate policies (a critical
one is refused, a non-critical one ignored), extendedKeyUsage contents, and the subject name of
the signing certificate (any certificate that chains to a trust anchor is accepted: give this
sidecar a trust bundle that issues only the platform's certificates). Validity is checked at
``now``, i.e. when the key is loaded (start-up), not at every answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from asn1crypto import pem, x509  # type: ignore[import-untyped]

from hsm.sm.signature import der_to_raw
from hsm.sm.sm2 import DEFAULT_USER_ID, HostSm2Verifier, Sm2PublicKey
from sidecar.platform.security.errors import KeyMaterialInvalid, MalformedSecuredMessage

SM2_CURVE_OID = "1.2.156.10197.1.301"
SM2_WITH_SM3_OID = "1.2.156.10197.1.501"
EC_PUBLIC_KEY_OID = "1.2.840.10045.2.1"
MAX_CHAIN_LENGTH = 8  # the signing certificate plus up to seven issuers
_UNDERSTOOD_CRITICAL = frozenset({"basic_constraints", "key_usage", "extended_key_usage"})

__all__ = ["CertificateRefused", "load_platform_key"]


class CertificateRefused(Exception):
    """A certificate (named by its subject CN) breaks ``reason``; its key is not used."""

    def __init__(self, certificate: str, reason: str) -> None:
        reason = " ".join(reason.split())  # one line, whatever a parser said
        super().__init__(f"certificate {certificate!r}: {reason}")
        self.certificate = certificate
        self.reason = reason


class _Certificate:
    """One parsed certificate, with what the checks need."""

    def __init__(self, der: bytes, origin: str) -> None:
        self.origin = origin
        try:
            self.cert: Any = x509.Certificate.load(der, strict=True)
            _ = self.cert.native  # parse everything now: a malformed field fails here, named
            self.name = _common_name(self.cert.subject)
            self.tbs_der: bytes = self.cert["tbs_certificate"].dump()
        except (ValueError, TypeError, KeyError) as exc:
            raise CertificateRefused(origin, f"is not a valid X.509 certificate ({exc})") from None

    @property
    def subject(self) -> Any:
        return self.cert.subject

    @property
    def issuer(self) -> Any:
        return self.cert.issuer

    def refuse(self, reason: str) -> CertificateRefused:
        return CertificateRefused(self.name, reason)

    def check_validity(self, now: datetime) -> None:
        validity = self.cert["tbs_certificate"]["validity"]
        not_before: datetime = validity["not_before"].native
        not_after: datetime = validity["not_after"].native
        if now < not_before:
            raise self.refuse(f"is not valid yet (notBefore {not_before.isoformat()})")
        if now > not_after:
            raise self.refuse(f"has expired (notAfter {not_after.isoformat()})")

    def check_extensions(self) -> None:
        unknown = set(self.cert.critical_extensions) - _UNDERSTOOD_CRITICAL
        if unknown:
            names = ", ".join(sorted(str(name) for name in unknown))
            raise self.refuse(f"has critical extensions this sidecar does not process: {names}")

    def sm2_key(self, role: str) -> Sm2PublicKey:
        info = self.cert.public_key
        algorithm = info["algorithm"]
        parameters = algorithm["parameters"]
        if (
            algorithm["algorithm"].dotted != EC_PUBLIC_KEY_OID
            or parameters.name != "named"
            or parameters.chosen.dotted != SM2_CURVE_OID
        ):
            raise self.refuse(
                f"{role} key is not an SM2 key (id-ecPublicKey on curve {SM2_CURVE_OID})"
            )
        try:
            return Sm2PublicKey.from_bytes(bytes(info["public_key"].native))
        except KeyMaterialInvalid as exc:
            raise self.refuse(f"{role} key is not a valid SM2 point ({exc})") from None

    def check_can_issue(self, issued_below: int) -> None:
        """This certificate signs ``issued_below`` CA certificates' worth of path below it."""
        constraints = self.cert.basic_constraints_value
        if constraints is None or not constraints["ca"].native:
            raise self.refuse(
                "is not a CA (basicConstraints cA is not TRUE) but issues certificates"
            )
        usage = self.cert.key_usage_value
        if usage is not None and "key_cert_sign" not in usage.native:
            raise self.refuse("is a CA whose keyUsage does not allow keyCertSign")
        limit = constraints["path_len_constraint"].native
        if limit is not None and issued_below > limit:
            raise self.refuse(f"pathLenConstraint {limit} allows fewer CAs below it")

    def check_signed_by(self, issuer: _Certificate, user_id: bytes) -> None:
        outer = self.cert["signature_algorithm"]
        inner = self.cert["tbs_certificate"]["signature"]
        if outer["algorithm"].dotted != SM2_WITH_SM3_OID:
            raise self.refuse(
                f"is not signed with SM2-with-SM3 ({SM2_WITH_SM3_OID}) "
                f"but {outer['algorithm'].dotted}"
            )
        if inner.dump() != outer.dump():
            raise self.refuse("signature algorithm differs inside and outside tbsCertificate")
        key = issuer.sm2_key("issuer's")
        try:
            signature = der_to_raw(bytes(self.cert.signature))
        except MalformedSecuredMessage as exc:
            raise self.refuse(f"signature is not a DER SM2 signature ({exc.reason})") from None
        if not HostSm2Verifier(key, user_id=user_id).verify(self.tbs_der, signature):
            raise self.refuse(f"signature does not verify with the key of {issuer.name!r}")


def load_platform_key(
    certificate_pem: bytes,
    trust_anchors_pem: bytes,
    *,
    now: datetime,
    user_id: bytes = DEFAULT_USER_ID,
) -> Sm2PublicKey:
    """The SM2 public key of the platform's signing certificate, once its chain is checked.

    ``certificate_pem`` holds the signing certificate first, optionally followed by
    intermediate CA certificates; ``trust_anchors_pem`` holds the CA certificates trusted
    (the platform CA, and intermediates may be put there too). ``now`` must be timezone-aware.
    ``user_id`` is the SM2 user ID of the certificate signatures (GM/T 0009 default).

    Raises :class:`CertificateRefused` (never anything else for bad input) naming the
    certificate and the rule it breaks.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    given = _certificates(certificate_pem, "platform certificate file")
    anchors = _certificates(trust_anchors_pem, "trust anchor file")
    leaf = given[0]
    leaf.check_validity(now)
    leaf.check_extensions()
    key = leaf.sm2_key("public")
    usage = leaf.cert.key_usage_value
    if usage is not None and "digital_signature" not in usage.native:
        raise leaf.refuse("keyUsage does not allow digitalSignature")
    _check_path(leaf, given[1:], anchors, now, user_id)
    return key


def _check_path(
    leaf: _Certificate,
    intermediates: Sequence[_Certificate],
    anchors: Sequence[_Certificate],
    now: datetime,
    user_id: bytes,
) -> None:
    current = leaf
    path = [leaf]
    while True:
        if any(current.cert.dump() == anchor.cert.dump() for anchor in anchors):
            return  # the configured trust anchor itself (already checked as an issuer)
        candidates = [
            c
            for c in (*anchors, *intermediates)
            if c.subject == current.issuer and all(c is not p for p in path)
        ]
        if not candidates:
            raise current.refuse(
                f"issuer {_common_name(current.issuer)!r} is not among the trusted CAs "
                "(a foreign or missing CA)"
            )
        issuer = _pick_issuer(current, candidates, user_id)
        issuer.check_validity(now)
        issuer.check_extensions()
        issuer.check_can_issue(issued_below=len(path) - 1)
        path.append(issuer)
        if issuer in anchors:
            if issuer.subject == issuer.issuer:
                issuer.check_signed_by(issuer, user_id)  # a self-signed root: its own signature
            return
        if len(path) >= MAX_CHAIN_LENGTH:
            raise leaf.refuse(f"chain is longer than {MAX_CHAIN_LENGTH} certificates")
        current = issuer


def _pick_issuer(
    subject: _Certificate, candidates: Sequence[_Certificate], user_id: bytes
) -> _Certificate:
    """The candidate whose key verifies the signature (CAs may share a name across rollover)."""
    first: CertificateRefused | None = None
    for candidate in candidates:
        try:
            subject.check_signed_by(candidate, user_id)
        except CertificateRefused as exc:
            first = first or exc
            continue
        return candidate
    assert first is not None
    raise first


def _certificates(data: bytes, origin: str) -> list[_Certificate]:
    try:
        if pem.detect(data):
            blocks = [
                der for kind, _, der in pem.unarmor(data, multiple=True) if kind == "CERTIFICATE"
            ]
        else:
            blocks = [data] if data else []
    except ValueError as exc:
        raise CertificateRefused(origin, f"is not valid PEM ({exc})") from None
    if not blocks:
        raise CertificateRefused(origin, "holds no certificate")
    return [_Certificate(der, f"{origin} #{i + 1}") for i, der in enumerate(blocks)]


def _common_name(name: Any) -> str:
    try:
        value = name.native.get("common_name")
        if isinstance(value, list):
            value = value[0] if value else None
        if isinstance(value, str) and value:
            return value
        return str(name.human_friendly) or "(empty name)"
    except (ValueError, TypeError, AttributeError):
        return "(unreadable name)"

"""What the TLS-key tests and the tunnel benchmark share: a throw-away CA, and an EC P-256 key pair
made in a SoftHSM token whose private half never leaves it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pkcs11
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pkcs11 import Attribute, KeyType
from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters


def make_ca(
    common_name: str, now: dt.datetime
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed P-256 CA valid from a day before ``now`` for ten years."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def token_p256_key(
    lib: str | Path, token_label: str, pin: str, *, label: str = "tls-client", key_id: bytes = b"q"
) -> bytes:
    """An EC P-256 key pair stored in the token (private half sensitive, never extractable);
    the public key's DER."""
    token = pkcs11.lib(str(lib)).get_token(token_label=token_label)
    with token.open(rw=True, user_pin=pin) as session:
        curve = session.create_domain_parameters(
            KeyType.EC,
            {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
            local=True,
        )
        public, _ = curve.generate_keypair(
            store=True,
            label=label,
            id=key_id,
            private_template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False},
        )
        return bytes(encode_ec_public_key(public))

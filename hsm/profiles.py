"""Vendor mechanism profiles: logical SM operations -> PKCS#11 numbers, as data.

PKCS#11 defines no SM2/SM3/SM4 mechanisms, so every HSM vendor numbers them
differently in the vendor-defined range.  The package therefore speaks only of
logical operations (``sm2_sign_e``, ``sm4_cbc``...) and a profile, one TOML file
in ``hsm/profiles/``, says which number each one is on a given HSM.  Adding an
HSM is adding a file, with its sources cited in comments.

Each entry carries the vendor's own constant name (without ``CKM_``/``CKK_``),
which becomes the python-pkcs11 enum member name (see :mod:`hsm.mechanisms`).
``signature_encoding`` says whether the token's SM2 signature output is raw
``r || s`` (64 bytes) or DER. ``pseudonym`` names the keyed PRF of subject pseudonyms and of
digests of personal data (:mod:`hsm.pseudonym`): ``hmac-sm3`` where the profile numbers
``sm3_hmac``, else ``sm4-cbc-mac`` (the default follows the profile's mechanisms).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

from hsm.errors import ConfigError
from hsm.pseudonym import REQUIRED_OPERATION, PseudonymMechanism, parse_mechanism

if TYPE_CHECKING:
    from collections.abc import Mapping

OPERATIONS: tuple[str, ...] = (
    "sm2_keygen",  # C_GenerateKeyPair of an SM2 key pair
    "sm2_sign_e",  # C_Sign of a host-computed 32-byte e = SM3(Z || M)
    "sm2_sign_message",  # C_Sign of a message; the token computes Z (default ID) and e
    "sm2_verify_e",  # C_Verify of a 32-byte e
    "sm3_digest",  # C_Digest
    "sm4_keygen",  # C_GenerateKey of an SM4 key
    "sm4_ecb",  # C_Encrypt/C_Decrypt, SM4-ECB without padding
    "sm4_cbc",  # C_Encrypt/C_Decrypt, SM4-CBC without padding, 16-byte IV parameter
    "sm4_wrap",  # C_WrapKey/C_UnwrapKey with an SM4 key
)
#: Operations a profile may leave out; what needs one refuses to start without it.
OPTIONAL_OPERATIONS: tuple[str, ...] = (
    "sm3_hmac",  # C_Sign/C_Verify, HMAC-SM3 with a generic secret key (pseudonym = "hmac-sm3")
)
KEY_TYPES: tuple[str, ...] = ("sm2", "sm4")
SignatureEncoding = Literal["raw", "der"]

_PACKAGE = "hsm"
_DIR = "profiles"


@dataclass(frozen=True)
class Entry:
    """One vendor constant: its vendor name and number."""

    name: str
    value: int


@dataclass(frozen=True)
class Profile:
    """A vendor's numbering of the logical operations and key types."""

    name: str
    description: str
    signature_encoding: SignatureEncoding
    mechanisms: Mapping[str, Entry]
    key_types: Mapping[str, Entry]
    pseudonym: PseudonymMechanism = "hmac-sm3"
    #: Key type of the platform tunnel's TLS client key (:mod:`hsm.tlskey`).
    tls_key: Literal["ec-p256", "rsa-2048"] = "ec-p256"


def known_profiles() -> list[str]:
    """Names of the profiles shipped in ``hsm/profiles/``."""
    root = resources.files(_PACKAGE).joinpath(_DIR)
    return sorted(p.name[: -len(".toml")] for p in root.iterdir() if p.name.endswith(".toml"))


def load_profile(name_or_path: str) -> Profile:
    """Load a shipped profile by name, or a profile file by path (``*.toml``)."""
    if name_or_path.endswith(".toml"):
        path = Path(name_or_path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"profile file {path} cannot be read: {exc.strerror}") from None
        return parse_profile(text, source=str(path))
    known = known_profiles()
    if name_or_path not in known:
        raise ConfigError(f"unknown profile {name_or_path!r}; known profiles: {', '.join(known)}")
    text = resources.files(_PACKAGE).joinpath(_DIR, f"{name_or_path}.toml").read_text("utf-8")
    return parse_profile(text, source=f"{name_or_path}.toml")


def _entries(
    table: object,
    required: tuple[str, ...],
    what: str,
    source: str,
    optional: tuple[str, ...] = (),
) -> dict[str, Entry]:
    if not isinstance(table, dict):
        raise ConfigError(f"profile {source}: [{what}] table is missing")
    missing = [k for k in required if k not in table]
    if missing:
        raise ConfigError(f"profile {source}: [{what}] lacks {', '.join(missing)}")
    unknown = [k for k in table if k not in required and k not in optional]
    if unknown:
        raise ConfigError(f"profile {source}: [{what}] has unknown entries {', '.join(unknown)}")
    out: dict[str, Entry] = {}
    for key in (*required, *(k for k in optional if k in table)):
        item = table[key]
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("name"), str)
            or not isinstance(item.get("value"), int)
            or isinstance(item.get("value"), bool)
        ):
            raise ConfigError(
                f'profile {source}: {what}.{key} must be {{ name = "...", value = 0x... }}'
            )
        out[key] = Entry(item["name"], item["value"])
    return out


def parse_profile(text: str, source: str) -> Profile:
    """Parse and validate one profile document."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"profile {source} is not valid TOML: {exc}") from None
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"profile {source}: name is missing")
    encoding = doc.get("signature_encoding", "raw")
    if encoding not in ("raw", "der"):
        raise ConfigError(f'profile {source}: signature_encoding must be "raw" or "der"')
    description = doc.get("description", "")
    mechs = _entries(
        doc.get("mechanisms"), OPERATIONS, "mechanisms", source, optional=OPTIONAL_OPERATIONS
    )
    kts = _entries(doc.get("key_types"), KEY_TYPES, "key_types", source)
    default = "hmac-sm3" if "sm3_hmac" in mechs else "sm4-cbc-mac"
    pseudonym = parse_mechanism(doc.get("pseudonym", default), source)
    needed = REQUIRED_OPERATION[pseudonym]
    if needed not in mechs:
        raise ConfigError(f"profile {source}: pseudonym {pseudonym} needs mechanisms.{needed}")
    tls_key = doc.get("tls_key", "ec-p256")
    if tls_key not in ("ec-p256", "rsa-2048"):
        raise ConfigError(f'profile {source}: tls_key must be "ec-p256" or "rsa-2048"')
    return Profile(
        name=name,
        description=str(description),
        signature_encoding="der" if encoding == "der" else "raw",
        mechanisms=MappingProxyType(mechs),
        key_types=MappingProxyType(kts),
        pseudonym=pseudonym,
        tls_key="rsa-2048" if tls_key == "rsa-2048" else "ec-p256",
    )

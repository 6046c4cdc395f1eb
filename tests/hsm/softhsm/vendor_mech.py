"""Vendor-defined PKCS#11 numbers as members of python-pkcs11's enums.

python-pkcs11 0.10 type-checks every mechanism with
``isinstance(mechanism, pkcs11.Mechanism)`` (``MechanismWithParam.__init__`` in
``_pkcs11.pyx``) and every key type with ``isinstance(key_type,
pkcs11.KeyType)`` (``_check_key_type``).  When it reads attributes back it
converts with ``KeyType(value)`` / ``Mechanism(value)`` (``attributes._enum``),
so an unknown vendor number raises ``ValueError`` on e.g. ``key.key_type``.
The Cython layer itself copies the member into ``CK_MECHANISM.mechanism`` as
a plain ``CK_ULONG`` (``self.data.mechanism = mechanism``), so once a vendor
number *is* a ``Mechanism`` instance, everything downstream works unchanged.

The way in used here: add named pseudo-members to the two existing ``IntEnum``
classes, exactly like ``aenum.extend_enum`` does.  A member is an ``int``
subclass instance created with ``int.__new__(cls, value)`` and given
``_name_``/``_value_``; it is registered in ``_member_map_`` (name lookup,
``Mechanism['SM3_SM2']``), ``_value2member_map_`` (value lookup,
``Mechanism(0x80008100)``), ``_member_names_`` (iteration) and as a class
attribute (``Mechanism.SM3_SM2``).  Nothing in python-pkcs11 is patched or
subclassed; the registration is explicit, idempotent and refuses to rebind a
name or a number to something else.

Vendor numbers differ between HSM vendors, so they come as a *profile*
(``VendorProfile``); ``register(profile)`` is called once at start-up.  Only
one profile can own a given member name (the enums are process-global).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from types import MappingProxyType
from typing import TypeVar

from pkcs11 import KeyType, Mechanism

# The production way in (hsm.mechanisms); this module only adds the raw vendor numbers that the
# patch implements but no production profile uses (CKM_SM2_RAW's alias, the *_PAD variants).
from hsm.mechanisms import extend_int_enum

CKM_VENDOR_DEFINED = 0x80000000
CKK_VENDOR_DEFINED = 0x80000000


@dataclass(frozen=True)
class VendorProfile:
    """Names -> numbers of one HSM vendor's SM mechanisms and key types."""

    name: str
    mechanisms: Mapping[str, int] = field(default_factory=dict)
    key_types: Mapping[str, int] = field(default_factory=dict)


# The "swpkcs11.h" family (Sansec SDK header, copied by many Chinese HSM SDKs),
# as implemented by hsm/softhsm/softhsm2-2.6.1-sm.patch (see its README.md).
_SM2 = CKM_VENDOR_DEFINED + 0x8000
_SM3 = CKM_VENDOR_DEFINED + 0x9000
_SM4 = CKM_VENDOR_DEFINED + 0xA000
SANSEC_SW = VendorProfile(
    name="sansec-swpkcs11",
    mechanisms=MappingProxyType(
        {
            "SM2_KEY_PAIR_GEN": _SM2 + 0x001,
            "SM3_SM2": _SM2 + 0x100,  # sign/verify message: token computes Z (default ID) and e
            "SM2_SIGN": _SM2
            + 0x104,  # sign/verify a 32-byte e (alias of SM2_RAW in the patched SoftHSM)
            "SM2_RAW": _SM2 + 0x200,  # sign/verify a 32-byte e
            "SM3_HASH": _SM3 + 0x001,
            "SM3_HMAC": _SM3 + 0x002,  # not in swpkcs11.h: the patch's own number (audit trail)
            "SM4_KEY_GEN": _SM4 + 0x001,
            "SM4_ECB": _SM4 + 0x100,
            "SM4_ECB_PAD": _SM4 + 0x101,
            "SM4_CBC": _SM4 + 0x200,
            "SM4_CBC_PAD": _SM4 + 0x201,
        }
    ),
    key_types=MappingProxyType(
        {
            "SM2": CKK_VENDOR_DEFINED + 0x4,
            "SM4": CKK_VENDOR_DEFINED + 0x6,
        }
    ),
)


E = TypeVar("E", bound=IntEnum)


@dataclass(frozen=True)
class Registered:
    """The enum members of one registered profile, by their short names."""

    profile: VendorProfile
    mechanisms: Mapping[str, Mechanism]
    key_types: Mapping[str, KeyType]

    def mech(self, name: str) -> Mechanism:
        return self.mechanisms[name]

    def key_type(self, name: str) -> KeyType:
        return self.key_types[name]


def register(profile: VendorProfile = SANSEC_SW) -> Registered:
    """Make the profile's numbers usable wherever python-pkcs11 wants an enum."""
    mechs = {n: extend_int_enum(Mechanism, n, v) for n, v in profile.mechanisms.items()}
    kts = {n: extend_int_enum(KeyType, n, v) for n, v in profile.key_types.items()}
    return Registered(profile, MappingProxyType(mechs), MappingProxyType(kts))

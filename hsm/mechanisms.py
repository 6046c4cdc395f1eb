"""A deliberate way for vendor-defined numbers into python-pkcs11's enums.

python-pkcs11 0.10 accepts a mechanism only if ``isinstance(m, Mechanism)``
(``MechanismWithParam.__init__``) and a key type only if it is a ``KeyType``
(``_check_key_type``); when it reads attributes back it converts with
``KeyType(value)``, so an unknown vendor key type makes ``key.key_type`` raise
``ValueError``.  Its Cython layer then copies the member into
``CK_MECHANISM.mechanism`` as a plain ``CK_ULONG``, so once a vendor number
*is* an enum member everything downstream works unchanged.

The technique (the one of ``tests/hsm/softhsm/vendor_mech.py``, made production code
here): add a pseudo-member to the existing ``IntEnum`` the way
``aenum.extend_enum`` does: an ``int`` subclass instance registered in
``_member_map_`` (lookup by name), ``_value2member_map_`` (lookup by value),
``_member_names_`` (iteration) and as a class attribute.  Nothing in
python-pkcs11 is patched.  Registration is

* explicit: only numbers of the configured profile are added;
* idempotent: the same name with the same number is a no-op, so two
  components (or a test suite) may register the same vendor numbering;
* non-rebinding: a name that already means another number, or a number that
  already has another name, is refused.  The enums are process-global, so one
  process speaks one vendor's numbering.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from enum import IntEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, TypeVar

from pkcs11 import KeyType, Mechanism

from hsm import versions
from hsm.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from hsm.profiles import Profile

E = TypeVar("E", bound=IntEnum)

_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
_MAX_ULONG = 0xFFFFFFFFFFFFFFFF
_lock = threading.Lock()


class EnumConflict(ConfigError):
    """A name or number is already bound differently in a python-pkcs11 enum."""


def extend_int_enum(enum_cls: type[E], name: str, value: int) -> E:
    """Add ``name = value`` to ``enum_cls`` (idempotent, never rebinding)."""
    if not _NAME.match(name):
        raise ConfigError(f"{name!r} is not a valid enum member name (A-Z, 0-9, _)")
    value = int(value)
    if not 0 <= value <= _MAX_ULONG:
        raise ConfigError(f"{name}={value:#x} does not fit a CK_ULONG")
    versions.check("python-pkcs11")  # the enums' internals are what this relies on
    with _lock:
        by_value = enum_cls._value2member_map_.get(value)
        by_name = enum_cls._member_map_.get(name)
        if by_value is not None and by_value is by_name:
            return by_name  # type: ignore[return-value]  # same binding: no-op
        if by_name is not None:
            raise EnumConflict(
                f"{enum_cls.__name__}.{name} already means {by_name.value:#x}, not {value:#x}"
            )
        if by_value is not None:
            raise EnumConflict(
                f"{value:#x} is already {enum_cls.__name__}.{by_value.name}, "
                f"it cannot also be {name}"
            )
        if hasattr(enum_cls, name):
            raise EnumConflict(f"{enum_cls.__name__} already has an attribute {name}")
        member = int.__new__(enum_cls, value)
        member._name_ = name
        member._value_ = value
        member.__objclass__ = enum_cls  # type: ignore[attr-defined]
        member._sort_order_ = len(enum_cls._member_names_)  # type: ignore[attr-defined]
        # Class attribute first: EnumType.__setattr__ refuses names in _member_map_.
        type.__setattr__(enum_cls, name, member)
        enum_cls._member_map_[name] = member
        enum_cls._value2member_map_[value] = member
        enum_cls._member_names_.append(name)
        return member


@dataclass(frozen=True)
class Registered:
    """A profile's logical operations and key types as python-pkcs11 enum members."""

    profile_name: str
    mechanisms: Mapping[str, Mechanism]
    key_types: Mapping[str, KeyType]

    def mech(self, operation: str) -> Mechanism:
        """The mechanism for a logical operation such as ``sm2_sign_e``."""
        try:
            return self.mechanisms[operation]
        except KeyError:
            raise ConfigError(
                f"profile {self.profile_name} defines no mechanism for {operation}"
            ) from None

    def key_type(self, logical: str) -> KeyType:
        """The key type for ``sm2`` or ``sm4``."""
        try:
            return self.key_types[logical]
        except KeyError:
            raise ConfigError(
                f"profile {self.profile_name} defines no key type {logical}"
            ) from None


def register(profile: Profile) -> Registered:
    """Make every number of ``profile`` usable wherever python-pkcs11 wants an enum."""
    mechs = {
        op: extend_int_enum(Mechanism, entry.name, entry.value)
        for op, entry in profile.mechanisms.items()
    }
    kts = {
        kt: extend_int_enum(KeyType, entry.name, entry.value)
        for kt, entry in profile.key_types.items()
    }
    return Registered(profile.name, MappingProxyType(mechs), MappingProxyType(kts))

"""The tested versions of the libraries whose private parts we use, checked before we use them.

Two places reach past a library's public API, each on purpose and documented where it happens:

- ``hsm/mechanisms.py`` adds vendor mechanism and key-type numbers to python-pkcs11's
  ``Mechanism`` and ``KeyType`` enums (python-pkcs11 accepts only enum members);
- ``hsm/sm/backend.py`` signs and verifies a precomputed SM2 ``e`` through tongsuopy's private
  cffi binding (its public API computes ``e`` itself, for the default user ID only).

Both rely on internals a new release may change. :func:`check` refuses, in one line, a version
outside the range they were tested with (the range ``pyproject.toml`` allows), instead of letting
a changed internal fail later in a less obvious way. The sidecar checks every entry at start-up;
the enum extension checks python-pkcs11 before it touches the enums (so ``yibao-hsm`` refuses
too). The SM core (``hsm/sm/``) imports nothing of ``hsm`` but its errors, so the tongsuopy path
keeps its own guard there: a self-test at first use, falling back to gmssl. A library that is
not installed passes (tongsuopy is optional; a missing python-pkcs11 fails at its import).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from hsm.errors import ConfigError


class UntestedVersion(ConfigError):
    """An installed library is outside the version range its private-API use was tested with."""


@dataclass(frozen=True)
class Tested:
    lower: tuple[int, ...]  # inclusive
    upper: tuple[int, ...]  # exclusive
    why: str


TESTED: dict[str, Tested] = {
    "python-pkcs11": Tested(
        (0, 10), (0, 11), "hsm/mechanisms.py adds vendor numbers to its Mechanism/KeyType enums"
    ),
    "tongsuopy": Tested(
        (1, 0, 1), (1, 1), "hsm/sm/backend.py signs SM2 e through its private cffi binding"
    ),
}


def check(distribution: str, installed: str | None = None) -> None:
    """Raise UntestedVersion if ``distribution`` (its installed version, or ``installed``) is
    outside its tested range."""
    tested = TESTED[distribution]
    if installed is None:
        try:
            installed = version(distribution)
        except PackageNotFoundError:
            return
    if not tested.lower <= _release(installed) < tested.upper:
        raise UntestedVersion(
            f"{distribution} {installed} is outside the tested range "
            f">={_text(tested.lower)},<{_text(tested.upper)} ({tested.why}); install the "
            "version constraints.txt pins"
        )


def check_all() -> None:
    """:func:`check` every library of :data:`TESTED` (the sidecar does at start-up)."""
    for distribution in TESTED:
        check(distribution)


def _release(text: str) -> tuple[int, ...]:
    """The numeric release of a version string: ``1.0.1rc2`` -> (1, 0, 1); junk -> ()."""
    match = re.match(r"\d+(?:\.\d+)*", text.strip())
    return tuple(int(part) for part in match.group(0).split(".")) if match else ()


def _text(release: tuple[int, ...]) -> str:
    return ".".join(str(part) for part in release)

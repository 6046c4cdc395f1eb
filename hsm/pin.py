"""Reading PINs from files, and keeping them out of logs and messages.

A PIN file is accepted only if it is a regular file (symlinks are followed, as
Kubernetes mounts secrets through symlinks, but the target must be a regular
file) that no group or other user can access, because anyone who can read the
user PIN can sign as the sidecar.  One trailing newline is stripped (``echo``
and editors add one); nothing else is, so a PIN may contain spaces.

The value lives in a :class:`Pin`, whose ``repr``/``str`` never show it; the
only way to the characters is :meth:`Pin.reveal`, called right where the PIN
is handed to the PKCS#11 module.  Error messages name the file, never the
content.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from hsm.errors import ConfigError, PolicyError

MAX_PIN_BYTES = 256


class Pin:
    """A PIN that does not print itself."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str) -> None:
        if not value:
            raise ConfigError(f"PIN from {source} is empty")
        self._value = value
        self.source = source

    def reveal(self) -> str:
        """The PIN characters; call only where they go to the PKCS#11 module."""
        return self._value

    def same_as(self, other: Pin) -> bool:
        return self._value == other._value

    def __repr__(self) -> str:
        return f"Pin(source={self.source!r})"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:  # no pickling of secrets into caches/queues
        raise TypeError("a Pin cannot be pickled")


def check_pin_file_mode(path: Path) -> None:
    """Refuse a PIN file that is not a regular file or is group/world accessible."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ConfigError(f"PIN file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"PIN file {path} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise PolicyError(f"PIN file {path} is not a regular file")
    if st.st_mode & 0o077:
        raise PolicyError(
            f"PIN file {path} is accessible by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); run chmod 600 {path}"
        )


def read_pin_file(path: str | os.PathLike[str]) -> Pin:
    """Read one PIN from ``path`` after checking the file's type and mode."""
    p = Path(path)
    check_pin_file_mode(p)
    try:
        with open(p, "rb") as f:
            raw = f.read(MAX_PIN_BYTES + 2)
    except OSError as exc:
        raise ConfigError(f"PIN file {p} cannot be read: {exc.strerror}") from None
    if raw.endswith(b"\r\n"):
        raw = raw[:-2]
    elif raw.endswith(b"\n"):
        raw = raw[:-1]
    if len(raw) > MAX_PIN_BYTES:
        raise ConfigError(f"PIN file {p} is longer than {MAX_PIN_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"PIN file {p} is not UTF-8 text") from None
    if "\n" in text:
        raise ConfigError(f"PIN file {p} has more than one line")
    return Pin(text, source=str(p))

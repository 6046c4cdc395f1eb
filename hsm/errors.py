"""Errors of the ``hsm`` package, each carrying the CLI exit code it maps to.

Every message is one line that names the thing that is wrong (a file, a token
label, a key label, a mechanism) so that an operator can act on it without a
traceback.  Secrets (PINs, key material) never appear in a message: callers
build messages only from names, paths and numbers.
"""

from __future__ import annotations


class HsmError(Exception):
    """Base class; ``exit_code`` is the documented ``yibao-hsm`` exit status."""

    exit_code = 3

    def __init__(self, message: str) -> None:
        # Keep messages single-line: they are printed as the one stderr line.
        super().__init__(" ".join(message.split()))


class PolicyError(HsmError):
    """A security policy is violated (extractable key, readable PIN file...)."""

    exit_code = 1


class ConfigError(HsmError):
    """Bad configuration or usage: unreadable file, unknown profile, bad value."""

    exit_code = 2


class TokenError(HsmError):
    """The PKCS#11 module or token failed or refused an operation."""

    exit_code = 3


class LoginError(TokenError):
    """C_Login was refused (wrong or locked PIN).  Never retried."""


class MissingMechanisms(TokenError):
    """The token lacks mechanisms that the configured profile promises."""


class NotFound(HsmError):
    """A token, key or object named by the caller does not exist."""

    exit_code = 4


class WrongKeyType(HsmError):
    """A key exists under the label but has another type or class."""

    exit_code = 4


class InvalidSignature(HsmError):
    """A signature did not verify (or could not be decoded)."""

    exit_code = 1


class MalformedInput(ConfigError):
    """Encoded input (signature, blob, PEM) could not be decoded."""

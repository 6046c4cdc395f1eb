"""Token initialisation (C_InitToken + C_InitPIN) for the security team.

python-pkcs11 0.10 has ``Session.init_pin`` (C_InitPIN) but no C_InitToken,
so the token is initialised through the module's own function list
(:class:`hsm.p11raw.RawModule`, ctypes on ``C_GetFunctionList``): the
documented entry point of every PKCS#11 module, on the same loaded instance
python-pkcs11 uses.  The SO then logs in (C_Login via the function list, so
the SO PIN is never kept by python-pkcs11) and sets the user PIN with
C_InitPIN; closing the session ends the SO login.
"""

from __future__ import annotations

import contextlib
from typing import Any

from pkcs11 import exceptions as p11e

from hsm.errors import ConfigError, NotFound, TokenError
from hsm.p11raw import CKF_TOKEN_INITIALIZED, CKR_OK, CKU_SO, RawModule
from hsm.pin import Pin
from hsm.token import find_token, initialized_tokens, load_module, login_error, session_handle

MIN_PIN, MAX_PIN = 4, 255


def free_slot(lib: Any) -> Any:
    """The first slot whose token has not been initialised."""
    for slot in lib.get_slots(token_present=True):
        if not int(slot.get_token().flags) & CKF_TOKEN_INITIALIZED:
            return slot
    raise NotFound("no uninitialised token slot is available on the module")


def init_token(module_path: str, label: str, so_pin: Pin, user_pin: Pin) -> int:
    """Initialise a free slot's token as ``label``; returns its slot id."""
    if not label or len(label.encode()) > 32:
        raise ConfigError("token label must be 1 to 32 bytes")
    if so_pin.same_as(user_pin):
        raise ConfigError("the SO PIN and the user PIN must differ")
    for pin, who in ((so_pin, "SO"), (user_pin, "user")):
        if not MIN_PIN <= len(pin.reveal()) <= MAX_PIN:
            raise ConfigError(f"{who} PIN from {pin.source} must be {MIN_PIN}-{MAX_PIN} characters")
    lib = load_module(module_path)
    if any(t.label == label for t in initialized_tokens(lib)):
        raise ConfigError(f"a token labelled {label!r} is already initialised")
    slot = free_slot(lib)
    raw = RawModule(module_path)
    rv = raw.init_token(int(slot.slot_id), so_pin.reveal().encode("utf-8"), label)
    if rv != CKR_OK:
        raise TokenError(f"C_InitToken for token {label!r} failed (rv=0x{rv:x})")
    token = find_token(lib, label)
    try:
        session = token.open(rw=True)
    except p11e.PKCS11Error as exc:
        raise TokenError(
            f"cannot open a session on token {label!r}: {type(exc).__name__}"
        ) from None
    try:
        rv = raw.login(session_handle(session), CKU_SO, so_pin.reveal().encode("utf-8"))
        if rv != CKR_OK:
            raise login_error(rv, so_pin, label)
        try:
            session.init_pin(user_pin.reveal())
        except p11e.PKCS11Error as exc:
            raise TokenError(f"C_InitPIN on token {label!r} failed: {type(exc).__name__}") from None
    finally:
        with contextlib.suppress(p11e.PKCS11Error):
            session.close()
    return int(token.slot.slot_id)

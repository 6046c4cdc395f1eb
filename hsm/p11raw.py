"""The few PKCS#11 calls python-pkcs11 0.10 does not offer, via ctypes.

python-pkcs11 has no ``C_InitToken`` and no ``C_CloseAllSessions``, and it
calls ``C_Initialize(NULL)``.  PKCS#11 (v2.40 s5.4, C_Initialize) lets a module
assume with ``pInitArgs == NULL`` that the application will not call it from
several threads; SoftHSM then disables its internal mutexes
(``MutexFactory::disable()``) and concurrent signing in several sessions
corrupts its state (measured here: CKR_GENERAL_ERROR from C_SignInit and a
hang with 2-4 threads).  :func:`enable_os_locking` therefore re-initialises
the module once, right after python-pkcs11 loaded it and before any session
exists, with ``CKF_OS_LOCKING_OK``.

The documented way into a module is its function list: ``C_GetFunctionList``
returns a ``CK_FUNCTION_LIST`` whose members appear in the order of the
standard (pkcs11f.h).  ``ctypes.CDLL`` of the same path returns the same
dlopen handle python-pkcs11 uses, so both see one module instance.  Only the
prefix of the structure up to ``C_Logout`` is declared; nothing after it is
read.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

from hsm.errors import TokenError

CK_ULONG = ctypes.c_ulong
CK_RV = CK_ULONG
CKR_OK = 0x0
CKR_CRYPTOKI_ALREADY_INITIALIZED = 0x191
CKF_OS_LOCKING_OK = 0x2
CKF_TOKEN_INITIALIZED = 0x400
CKU_SO = 0
CKU_USER = 1
CKR_PIN_INCORRECT = 0xA0
CKR_PIN_LEN_RANGE = 0xA2
CKR_PIN_LOCKED = 0xA4
CKR_USER_ALREADY_LOGGED_IN = 0x100


class CK_VERSION(ctypes.Structure):  # noqa: N801 - PKCS#11 name
    _fields_ = (("major", ctypes.c_ubyte), ("minor", ctypes.c_ubyte))


class CK_C_INITIALIZE_ARGS(ctypes.Structure):  # noqa: N801
    _fields_ = (
        ("CreateMutex", ctypes.c_void_p),
        ("DestroyMutex", ctypes.c_void_p),
        ("LockMutex", ctypes.c_void_p),
        ("UnlockMutex", ctypes.c_void_p),
        ("flags", CK_ULONG),
        ("pReserved", ctypes.c_void_p),
    )


# Function-list members in the order of pkcs11f.h, up to C_Logout.
_FUNCTIONS = (
    "C_Initialize",
    "C_Finalize",
    "C_GetInfo",
    "C_GetFunctionList",
    "C_GetSlotList",
    "C_GetSlotInfo",
    "C_GetTokenInfo",
    "C_GetMechanismList",
    "C_GetMechanismInfo",
    "C_InitToken",
    "C_InitPIN",
    "C_SetPIN",
    "C_OpenSession",
    "C_CloseSession",
    "C_CloseAllSessions",
    "C_GetSessionInfo",
    "C_GetOperationState",
    "C_SetOperationState",
    "C_Login",
    "C_Logout",
)


class CK_FUNCTION_LIST_PREFIX(ctypes.Structure):  # noqa: N801
    _fields_ = (("version", CK_VERSION), *((name, ctypes.c_void_p) for name in _FUNCTIONS))


_PROTOTYPES: dict[str, Any] = {
    "C_Initialize": ctypes.CFUNCTYPE(CK_RV, ctypes.c_void_p),
    "C_Finalize": ctypes.CFUNCTYPE(CK_RV, ctypes.c_void_p),
    "C_InitToken": ctypes.CFUNCTYPE(CK_RV, CK_ULONG, ctypes.c_char_p, CK_ULONG, ctypes.c_char_p),
    "C_CloseAllSessions": ctypes.CFUNCTYPE(CK_RV, CK_ULONG),
    "C_GetSessionInfo": ctypes.CFUNCTYPE(CK_RV, CK_ULONG, ctypes.c_void_p),
    "C_Login": ctypes.CFUNCTYPE(CK_RV, CK_ULONG, CK_ULONG, ctypes.c_char_p, CK_ULONG),
}


class CK_SESSION_INFO(ctypes.Structure):  # noqa: N801
    _fields_ = (
        ("slotID", CK_ULONG),
        ("state", CK_ULONG),
        ("flags", CK_ULONG),
        ("ulDeviceError", CK_ULONG),
    )


CKS_RO_USER_FUNCTIONS = 1
CKS_RW_USER_FUNCTIONS = 3


class RawModule:
    """Typed access to a handful of entries of one module's function list."""

    def __init__(self, module_path: str) -> None:
        try:
            self._dll = ctypes.CDLL(module_path)
        except OSError as exc:
            raise TokenError(f"cannot load PKCS#11 module {module_path}: {exc}") from None
        self.path = module_path
        ptr = ctypes.POINTER(CK_FUNCTION_LIST_PREFIX)()
        rv = self._dll.C_GetFunctionList(ctypes.byref(ptr))
        if rv != CKR_OK or not ptr:
            raise TokenError(f"C_GetFunctionList of {module_path} failed (rv=0x{rv:x})")
        self._list = ptr.contents

    def _fn(self, name: str) -> Any:
        address = getattr(self._list, name)
        if not address:
            raise TokenError(f"PKCS#11 module {self.path} does not implement {name}")
        return _PROTOTYPES[name](address)

    def finalize(self) -> int:
        return int(self._fn("C_Finalize")(None))

    def initialize_os_locking(self) -> int:
        args = CK_C_INITIALIZE_ARGS(None, None, None, None, CKF_OS_LOCKING_OK, None)
        return int(self._fn("C_Initialize")(ctypes.byref(args)))

    def init_token(self, slot_id: int, so_pin: bytes, label: str) -> int:
        """C_InitToken; ``label`` is padded with blanks to 32 bytes as required."""
        raw_label = label.encode("utf-8")
        if len(raw_label) > 32:
            raise TokenError(f"token label {label!r} is longer than 32 bytes")
        padded = raw_label.ljust(32, b" ")
        return int(self._fn("C_InitToken")(slot_id, so_pin, len(so_pin), padded))

    def close_all_sessions(self, slot_id: int) -> int:
        return int(self._fn("C_CloseAllSessions")(slot_id))

    def login(self, session_handle: int, user_type: int, pin: bytes) -> int:
        """C_Login on an open session; returns the CK_RV (the caller maps it)."""
        return int(self._fn("C_Login")(session_handle, user_type, pin, len(pin)))

    def session_state(self, session_handle: int) -> int | None:
        """CK_SESSION_INFO.state of a session, or None if the call fails."""
        info = CK_SESSION_INFO()
        rv = int(self._fn("C_GetSessionInfo")(session_handle, ctypes.byref(info)))
        return int(info.state) if rv == CKR_OK else None

    def is_user_logged_in(self, session_handle: int) -> bool:
        return self.session_state(session_handle) in (CKS_RO_USER_FUNCTIONS, CKS_RW_USER_FUNCTIONS)


_locked_modules: set[str] = set()
_locked_guard = threading.Lock()


def enable_os_locking(module_path: str) -> None:
    """Re-initialise ``module_path`` with CKF_OS_LOCKING_OK, once per process.

    Must run after python-pkcs11 loaded the module and before any session is
    opened (C_Finalize closes every session of the process).
    """
    with _locked_guard:
        if module_path in _locked_modules:
            return
        raw = RawModule(module_path)
        raw.finalize()
        rv = raw.initialize_os_locking()
        if rv not in (CKR_OK, CKR_CRYPTOKI_ALREADY_INITIALIZED):
            raise TokenError(
                f"C_Initialize(CKF_OS_LOCKING_OK) of {module_path} failed (rv=0x{rv:x})"
            )
        _locked_modules.add(module_path)

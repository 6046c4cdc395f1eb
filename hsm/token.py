"""Token access: one login, a pool of sessions on worker threads, recovery.

Why a pool of threads: python-pkcs11 releases the GIL during PKCS#11 calls,
but a PKCS#11 session runs one operation at a time.  N worker threads each own
one session; callers hand them work through a queue (``await token.run(fn)``
from asyncio, ``token.call(fn)`` from plain threads), so N signatures run in
the HSM at once while the event loop stays free.

Why one login: the PKCS#11 login state belongs to the application, not to a
session (v2.40 s5.6): after one C_Login every session of the process is a user
session.  The pool opens an *anchor* session, logs in on it once (C_Login via
the module's function list, :mod:`hsm.p11raw`, so python-pkcs11 never keeps the
PIN or calls C_Logout when a worker session is closed) and opens the worker
sessions without a PIN.

Recovery: when an operation fails with SessionHandleInvalid, SessionClosed,
UserNotLoggedIn, DeviceRemoved or TokenNotPresent (the session or the login is
gone: HSM restart, network HSM failover, someone called C_CloseAllSessions),
the worker re-finds the token by label, logs in again if the anchor session
is no longer a user session (only the first worker to notice does this; the
others see the generation counter moved on), reopens its own session and runs
the operation once more.  A second failure is returned to the caller.  A
refused PIN (PinIncorrect, PinLocked, PinLenRange) is never retried: retrying
a wrong PIN only moves the token closer to locking the user out.

SoftHSM (and any module allowed to by PKCS#11) skips all internal locking when
C_Initialize gets NULL arguments, which is what python-pkcs11 passes;
:func:`hsm.p11raw.enable_os_locking` re-initialises the module with
CKF_OS_LOCKING_OK before the first session is opened.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

import pkcs11
from pkcs11 import exceptions as p11e

from hsm.errors import ConfigError, LoginError, MissingMechanisms, NotFound, TokenError
from hsm.mechanisms import Registered, register
from hsm.p11raw import (
    CKF_TOKEN_INITIALIZED,
    CKR_OK,
    CKR_PIN_INCORRECT,
    CKR_PIN_LEN_RANGE,
    CKR_PIN_LOCKED,
    CKR_USER_ALREADY_LOGGED_IN,
    CKU_USER,
    RawModule,
    enable_os_locking,
)
from hsm.pin import Pin, read_pin_file
from hsm.profiles import Profile, load_profile

log = logging.getLogger(__name__)

T = TypeVar("T")

RECOVERABLE: tuple[type[Exception], ...] = (
    p11e.SessionHandleInvalid,
    p11e.SessionClosed,
    p11e.UserNotLoggedIn,
    p11e.DeviceRemoved,
    p11e.TokenNotPresent,
)


@dataclass(frozen=True)
class TokenConfig:
    """Where the token is and how to log in; PINs are referenced by file only."""

    module: str
    token_label: str
    profile: str = "softhsm-sm"
    user_pin_file: str | None = None
    pool_size: int = 2


@dataclass
class WorkerSession:
    """One PKCS#11 session owned by one worker thread.

    ``cache`` holds per-session objects (python-pkcs11 key objects are bound to
    the session they were found in); it is emptied when the session is reopened.
    """

    p11: pkcs11.Session
    cache: dict[Any, Any] = field(default_factory=dict)


def session_handle(session: pkcs11.Session) -> int:
    """The CK_SESSION_HANDLE of a python-pkcs11 session (not in its type stubs)."""
    return int(cast(Any, session).handle)


def load_module(module_path: str) -> Any:
    """Load a PKCS#11 module with python-pkcs11, then turn on OS locking."""
    path = Path(module_path)
    if not path.is_file():
        raise ConfigError(f"PKCS#11 module {module_path} does not exist")
    try:
        lib = pkcs11.lib(str(path))
    except p11e.PKCS11Error as exc:
        raise TokenError(f"cannot load PKCS#11 module {module_path}: {exc}") from None
    enable_os_locking(str(path))
    return lib


def initialized_tokens(lib: Any) -> list[Any]:
    """Tokens that have been through C_InitToken (SoftHSM also shows a blank one)."""
    tokens = []
    for slot in lib.get_slots(token_present=True):
        tok = slot.get_token()
        if int(tok.flags) & CKF_TOKEN_INITIALIZED:
            tokens.append(tok)
    return tokens


def find_token(lib: Any, label: str) -> Any:
    """The initialised token called ``label``; the error lists the labels present."""
    tokens = initialized_tokens(lib)
    for tok in tokens:
        if tok.label == label:
            return tok
    present = ", ".join(repr(t.label) for t in tokens) or "none"
    raise NotFound(f"token label {label!r} not found; tokens present: {present}")


def missing_mechanisms(slot: Any, registered: Registered) -> list[str]:
    """Every profile mechanism the slot's C_GetMechanismList lacks, described."""
    present = {int(m) for m in slot.get_mechanisms()}
    missing: list[str] = []
    for op, mech in registered.mechanisms.items():
        if int(mech) not in present:
            missing.append(f"{op} ({mech.name} {int(mech):#x})")
    return missing


def login_error(rv: int, pin: Pin, token_label: str) -> TokenError:
    """Translate a C_Login CK_RV; the message names the PIN's file, never the PIN."""
    if rv == CKR_PIN_INCORRECT:
        return LoginError(
            f"login to token {token_label!r} refused: PIN from {pin.source} is incorrect"
        )
    if rv == CKR_PIN_LOCKED:
        return LoginError(f"login to token {token_label!r} refused: the user PIN is locked")
    if rv == CKR_PIN_LEN_RANGE:
        return LoginError(
            f"login to token {token_label!r} refused: PIN from {pin.source} has an invalid length"
        )
    return TokenError(f"C_Login on token {token_label!r} failed (rv=0x{rv:x})")


class _Job(Generic[T]):
    __slots__ = ("fn", "future", "loop")

    def __init__(
        self,
        fn: Callable[[WorkerSession], T],
        future: asyncio.Future[T] | concurrent.futures.Future[T],
        loop: asyncio.AbstractEventLoop | None,
    ) -> None:
        self.fn = fn
        self.future = future
        self.loop = loop

    def finish(self, result: T | None, error: BaseException | None) -> None:
        fut = self.future
        if self.loop is None:
            assert isinstance(fut, concurrent.futures.Future)
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(result)  # type: ignore[arg-type]
            return
        assert isinstance(fut, asyncio.Future)
        with contextlib.suppress(RuntimeError):  # loop closed: nobody waits any more
            self.loop.call_soon_threadsafe(_resolve, fut, result, error)


def _resolve(fut: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if fut.done():  # cancelled by the caller meanwhile
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)


class HsmToken:
    """A logged-in token with a pool of worker sessions."""

    def __init__(
        self,
        *,
        module_path: str,
        token_label: str,
        profile: Profile,
        pin: Pin,
        pool_size: int = 2,
        check_mechanisms: bool = True,
    ) -> None:
        if pool_size < 1:
            raise ConfigError(f"pool size must be at least 1, not {pool_size}")
        self.module_path = module_path
        self.token_label = token_label
        self.profile = profile
        self.mechs: Registered = register(profile)
        self._pin = pin
        self._lib = load_module(module_path)
        self._raw = RawModule(module_path)
        self._token = find_token(self._lib, token_label)
        if check_mechanisms:
            missing = missing_mechanisms(self._token.slot, self.mechs)
            if missing:
                raise MissingMechanisms(
                    f"token {token_label!r} lacks mechanisms of profile {profile.name}: "
                    + ", ".join(missing)
                )
        self.login_attempts = 0
        self.recoveries = 0
        self._generation = 0
        self._recovery_lock = threading.Lock()
        self._anchor = self._open_session()
        try:
            self._login(self._anchor)
            sessions = [WorkerSession(self._open_session()) for _ in range(pool_size)]
        except BaseException:
            self._close_quietly(self._anchor)
            raise
        self._jobs: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._worker, args=(ws,), name=f"hsm-worker-{i}", daemon=True)
            for i, ws in enumerate(sessions)
        ]
        self._sessions = sessions
        for t in self._threads:
            t.start()
        self._closed = False

    # ------------------------------------------------------------------ construction
    @classmethod
    def open(cls, config: TokenConfig, *, pin: Pin | None = None) -> HsmToken:
        """Open from a :class:`TokenConfig`, reading the user PIN from its file."""
        profile = load_profile(config.profile)
        if pin is None:
            if not config.user_pin_file:
                raise ConfigError("no user PIN file configured (--user-pin-file)")
            pin = read_pin_file(config.user_pin_file)
        return cls(
            module_path=config.module,
            token_label=config.token_label,
            profile=profile,
            pin=pin,
            pool_size=config.pool_size,
        )

    # ------------------------------------------------------------------ public API
    @property
    def pool_size(self) -> int:
        return len(self._threads)

    @property
    def slot(self) -> Any:
        """The python-pkcs11 slot of the token (mechanism list, slot id)."""
        return self._token.slot

    @property
    def slot_id(self) -> int:
        return int(self._token.slot.slot_id)

    @property
    def raw(self) -> RawModule:
        """The module's function list (C_CloseAllSessions, C_GetSessionInfo...)."""
        return self._raw

    def open_session(self) -> pkcs11.Session:
        """An extra session outside the pool (admin tools, benchmarks); caller closes it."""
        return self._open_session()

    async def run(self, fn: Callable[[WorkerSession], T]) -> T:
        """Run ``fn(worker_session)`` on a worker thread; await its result."""
        self._check_open()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._jobs.put(_Job(fn, fut, loop))
        return await fut

    def call(self, fn: Callable[[WorkerSession], T]) -> T:
        """Blocking twin of :meth:`run` for threads without an event loop (CLI)."""
        self._check_open()
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._jobs.put(_Job(fn, fut, None))
        return fut.result()

    def close(self) -> None:
        """Stop the workers, close their sessions, then log out and close the anchor."""
        if getattr(self, "_closed", True):
            return
        self._closed = True
        for _ in self._threads:
            self._jobs.put(None)
        for t in self._threads:
            t.join(timeout=30)
        for ws in self._sessions:
            self._close_quietly(ws.p11)
        self._close_quietly(self._anchor)

    def __enter__(self) -> HsmToken:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals
    def _check_open(self) -> None:
        if self._closed:
            raise TokenError(f"token {self.token_label!r} has been closed")

    def _open_session(self) -> pkcs11.Session:
        try:
            session: pkcs11.Session = self._token.open(rw=True)
        except p11e.PKCS11Error as exc:
            raise TokenError(
                f"cannot open a session on token {self.token_label!r}: {type(exc).__name__}"
            ) from None
        return session

    def _login(self, session: pkcs11.Session) -> None:
        """C_Login once on ``session``.  Never retried."""
        self.login_attempts += 1
        rv = self._raw.login(session_handle(session), CKU_USER, self._pin.reveal().encode("utf-8"))
        if rv == CKR_USER_ALREADY_LOGGED_IN:
            log.info("token %r: already logged in by this process", self.token_label)
            return
        if rv != CKR_OK:
            raise login_error(rv, self._pin, self.token_label)
        log.info("token %r: logged in (login #%d)", self.token_label, self.login_attempts)

    @staticmethod
    def _close_quietly(session: pkcs11.Session) -> None:
        with contextlib.suppress(p11e.PKCS11Error):
            session.close()

    def _worker(self, ws: WorkerSession) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                result = self._execute(ws, job.fn)
            except BaseException as exc:
                job.finish(None, exc)
            else:
                job.finish(result, None)

    def _execute(self, ws: WorkerSession, fn: Callable[[WorkerSession], T]) -> T:
        generation = self._generation
        try:
            return fn(ws)
        except RECOVERABLE as exc:
            log.warning(
                "token %r: %s; reopening sessions and retrying once",
                self.token_label,
                type(exc).__name__,
            )
            self._recover(ws, generation)
            return fn(ws)

    def _recover(self, ws: WorkerSession, seen_generation: int) -> None:
        with self._recovery_lock:
            if self._generation == seen_generation:
                self.recoveries += 1
                self._token = find_token(self._lib, self.token_label)
                if not self._raw.is_user_logged_in(session_handle(self._anchor)):
                    anchor = self._open_session()
                    if not self._raw.is_user_logged_in(session_handle(anchor)):
                        self._login(anchor)
                    self._anchor = anchor
                self._generation += 1
        ws.p11 = self._open_session()
        ws.cache.clear()

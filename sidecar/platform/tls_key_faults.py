"""Whether the platform TLS key in the token still signs handshakes, as the tunnel last saw it.

OpenSSL's ``pkcs11`` engine (libp11) keeps the key's object handle for the life of the process:
once the token has vanished, every new full handshake fails at once ("PKCS#11
module::Object handle invalid") and the process never recovers, not even when the token comes
back (docs/hsm.md, "Session faults"). The tunnel records such a failure here
(:meth:`KeyFaults.unusable`) and clears it when a request on a new connection succeeds
(:meth:`KeyFaults.usable`); the probes read it and subscribe to its changes: readiness
NOT_SERVING at once, liveness NOT_SERVING once the fault has lasted ``[server]
tls_key_unusable_seconds``, so the kubelet restarts the container and the new process loads the
key afresh. Only for a key in the token: a key file has no such fault.

Time is an injected monotonic clock (seconds), never the wall clock or the host's time zone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class KeyFault:
    """The key became unusable: a reason class, the library's error text, and since when.

    ``reason`` is ``"pkcs11"`` (the PKCS#11 module refused the handshake's signature) or
    ``"key_load"`` (the engine could not load the key); ``error`` is the library's fixed text
    (``"Object handle invalid"``), never a PIN, URI or key. ``since`` is the clock's reading at
    the first failure after the last good handshake.
    """

    reason: str
    error: str
    since: float


Listener = Callable[[KeyFault | None], None]


class KeyFaults:
    """The TLS key's state since the last successful full handshake; listeners hear changes."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._fault: KeyFault | None = None
        self._listeners: list[Listener] = []

    @property
    def fault(self) -> KeyFault | None:
        """The current fault, or ``None`` while the key is usable."""
        return self._fault

    def unusable_for(self) -> float | None:
        """Seconds since the key first failed (``None`` while it is usable)."""
        return None if self._fault is None else self._clock() - self._fault.since

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener`` with the new fault (or ``None``) on every change of state."""
        self._listeners.append(listener)

    def unusable(self, reason: str, error: str) -> None:
        """A handshake failed because of the key; a later failure keeps the first one's time."""
        if self._fault is not None:
            return
        self._fault = KeyFault(reason, error, self._clock())
        self._notify()

    def usable(self) -> None:
        """A request on a new connection succeeded: the key signed its handshake."""
        if self._fault is None:
            return
        self._fault = None
        self._notify()

    def _notify(self) -> None:
        for listener in self._listeners:
            listener(self._fault)

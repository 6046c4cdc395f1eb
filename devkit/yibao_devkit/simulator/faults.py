"""Fault switches: make the simulated platform misbehave on purpose, per transaction.

A :class:`Faults` registry maps an ``infno`` (or ``*`` for every transaction) to one
:class:`Fault`. The app's single request path consults it for each request whose body names an
``infno``; ``times=N`` limits the fault to the next N such requests, after which the switch
clears itself; ``times=None`` (the default) affects every request until cleared.

What each kind does, and whether the transaction takes effect:

=====================  ==========================================================  ==========
kind                   behaviour seen by the client                                 performed?
=====================  ==========================================================  ==========
``latency``            the answer comes ``seconds`` late (default 1 s)              yes
``timeout``            no answer for ``seconds`` (default 30 s, longer than the     no
                       20 s clients wait; at most 120 s), then the connection drops
``http-5xx``           HTTP ``status`` (default 503) with a text body               no
``reset``              the connection is dropped without an answer                  no
``malformed-json``     HTTP 200 whose body is cut in the middle of the JSON         yes
``bad-signature``      a normal answer whose signature (``cainfo``) fails checks    yes
``refuse``             ``infcode`` -1 with ``err_msg`` (default: system busy)       no
``expired-sign-in``    every sign-in is dropped first, so the request is refused    no
                       with "sign in again" (and so is everyone's next request)
``commit-then-drop``   the transaction is performed (state, ledger), then the       yes
                       connection is dropped so the answer never arrives
=====================  ==========================================================  ==========

For "performed but answered too late" use ``latency`` with more seconds than the client waits.
Dropping aborts the whole TCP connection: over HTTP/2 the other requests in flight on it fail too,
as they would when a real gateway resets.
On the command line a fault is ``INFNO:KIND[=VALUE][:TIMES]``, e.g. ``2207:commit-then-drop:1``,
``1101:latency=0.5``, ``2207:http-5xx=502:3``, ``*:reset:1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import Enum
from typing import Final

from yibao_devkit.simulator import errors

ANY_TRANSACTION: Final = "*"
DEFAULT_LATENCY: Final = 1.0
DEFAULT_HOLD: Final = 30.0
MAX_HOLD: Final = 120.0


class FaultKind(Enum):
    LATENCY = "latency"
    TIMEOUT = "timeout"
    HTTP_5XX = "http-5xx"
    RESET = "reset"
    MALFORMED_JSON = "malformed-json"
    BAD_SIGNATURE = "bad-signature"
    REFUSE = "refuse"
    EXPIRED_SIGN_IN = "expired-sign-in"
    COMMIT_THEN_DROP = "commit-then-drop"


@dataclass(frozen=True)
class Fault:
    """One fault switch; ``seconds``, ``status`` and ``err_msg`` apply to their kinds only."""

    kind: FaultKind
    times: int | None = None
    seconds: float | None = None
    status: int = 503
    err_msg: str = errors.SYSTEM_BUSY

    def __post_init__(self) -> None:
        if self.times is not None and self.times < 1:
            raise ValueError("times must be at least 1 (or None for every request)")
        if self.seconds is not None and not (math.isfinite(self.seconds) and self.seconds >= 0):
            raise ValueError("seconds must be a finite, non-negative number")
        if not 500 <= self.status <= 599:
            raise ValueError("status must be a 5xx HTTP status")

    @property
    def delay(self) -> float:
        """How long ``latency`` delays or ``timeout`` holds a request, in seconds."""
        if self.kind is FaultKind.TIMEOUT:
            return min(self.seconds if self.seconds is not None else DEFAULT_HOLD, MAX_HOLD)
        if self.kind is FaultKind.LATENCY:
            return self.seconds if self.seconds is not None else DEFAULT_LATENCY
        return 0.0


class Faults:
    """The fault switches of one simulator; empty means the platform behaves."""

    def __init__(self) -> None:
        self._by_infno: dict[str, Fault] = {}

    def set(self, infno: str, fault: Fault) -> None:
        """Switch ``fault`` on for ``infno`` (``*``: every transaction), replacing any there."""
        self._by_infno[infno] = fault

    def clear(self, infno: str | None = None) -> None:
        """Switch off the fault for ``infno``, or every fault."""
        if infno is None:
            self._by_infno.clear()
        else:
            self._by_infno.pop(infno, None)

    def get(self, infno: str) -> Fault | None:
        """The fault switched on for ``infno``, without consuming it."""
        return self._by_infno.get(infno)

    def take(self, infno: str) -> Fault | None:
        """The fault that applies to this request for ``infno``, counting it against ``times``.

        A fault for the exact ``infno`` wins over one for ``*``.
        """
        key = infno if infno in self._by_infno else ANY_TRANSACTION
        fault = self._by_infno.get(key)
        if fault is None:
            return None
        if fault.times is not None:
            if fault.times <= 1:
                del self._by_infno[key]
            else:
                self._by_infno[key] = replace(fault, times=fault.times - 1)
        return fault

    def __bool__(self) -> bool:
        return bool(self._by_infno)


def parse(spec: str) -> tuple[str, Fault]:
    """``INFNO:KIND[=VALUE][:TIMES]`` as the ``infno`` and the :class:`Fault`; ValueError if bad.

    VALUE is seconds for ``latency`` and ``timeout``, the HTTP status for ``http-5xx`` and the
    ``err_msg`` for ``refuse`` (which may not contain a colon); other kinds take none.
    """
    infno, sep, rest = spec.partition(":")
    if not sep or not infno or not rest:
        raise ValueError(f"expected INFNO:KIND[=VALUE][:TIMES], got {spec!r}")
    times: int | None = None
    head, sep, tail = rest.rpartition(":")
    if sep and tail.isdigit():
        rest, times = head, int(tail)
    name, has_value, value = rest.partition("=")
    try:
        kind = FaultKind(name)
    except ValueError:
        known = ", ".join(k.value for k in FaultKind)
        raise ValueError(f"unknown fault kind {name!r} (known: {known})") from None
    if ":" in value or (has_value and not value):
        raise ValueError(f"bad value in fault {spec!r}")
    fault = Fault(kind, times=times)
    if has_value:
        if kind in (FaultKind.LATENCY, FaultKind.TIMEOUT):
            fault = replace(fault, seconds=float(value))
        elif kind is FaultKind.HTTP_5XX:
            fault = replace(fault, status=int(value))
        elif kind is FaultKind.REFUSE:
            fault = replace(fault, err_msg=value)
        else:
            raise ValueError(f"fault kind {name!r} takes no value")
    return infno, fault

"""Sign-in state: which sign_no (签到编号) each operator currently holds.

9001 issues a new sign_no to an operator and supersedes the one they held, so at most one per
operator is valid, as on platforms that keep a single session per operator; 9002 ends it. A sidecar
that runs several replicas under one operator code therefore sees "sign-in invalid" refusals,
which it must survive by signing in again. :meth:`SignInBook.invalidate_all` models the platform
dropping every session (a nightly reset or a restart) for fault tests.
"""

from __future__ import annotations

import datetime as dt
import itertools

from yibao_devkit.simulator import times


class SignInBook:
    """The simulator's sign-in sessions, keyed by operator."""

    def __init__(self, division: str) -> None:
        self._division = division
        self._serial = itertools.count(1)
        self._by_operator: dict[str, str] = {}

    def sign_in(self, operator: str, now: dt.datetime) -> str:
        """Issue a sign_no for ``operator``, invalidating any they held before.

        The number is digits only, 30 long: division (6) + yyyyMMddHHmmss (14) + serial (10).
        """
        sign_no = f"{self._division}{now:{times.COMPACT_FORMAT}}{next(self._serial) % 10**10:010d}"
        self._by_operator[operator] = sign_no
        return sign_no

    def sign_out(self, operator: str, sign_no: str) -> bool:
        """End ``operator``'s session if ``sign_no`` is the one they hold; whether it was."""
        if self.is_valid(operator, sign_no):
            del self._by_operator[operator]
            return True
        return False

    def is_valid(self, operator: str, sign_no: str) -> bool:
        """Whether ``sign_no`` is ``operator``'s current, not signed-out session."""
        return bool(sign_no) and self._by_operator.get(operator) == sign_no

    def current(self, operator: str) -> str | None:
        """The sign_no ``operator`` currently holds, if any."""
        return self._by_operator.get(operator)

    def invalidate_all(self) -> None:
        """Drop every session, as the platform does at its daily reset."""
        self._by_operator.clear()

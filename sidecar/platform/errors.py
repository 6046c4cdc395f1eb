"""What can go wrong with a platform transaction, in the platform layer's own terms."""

from __future__ import annotations


class PlatformRefusal(Exception):
    """The platform answered ``infcode -1`` (a business refusal) with its own message."""

    def __init__(self, infno: str, infcode: int, err_msg: str) -> None:
        super().__init__(f"transaction {infno} refused: {err_msg}")
        self.infno = infno
        self.infcode = infcode
        self.err_msg = err_msg


class PlatformUnreachable(Exception):
    """No valid answer: the connection failed, timed out, or the answer was malformed.

    ``sent`` tells whether the platform may have received (and acted on) the request;
    ``retry_after`` is set when the sidecar itself refused to send (the circuit is open) and says
    when trying again makes sense.
    """

    def __init__(
        self,
        message: str,
        *,
        sent: bool,
        timed_out: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.sent = sent
        self.timed_out = timed_out
        self.retry_after = retry_after

"""The platform client: one ``call`` per transaction, with sign-in handled underneath.

Business transactions need a ``sign_no`` from sign-in (9001). The client signs each operator in
on first use, caches the ``sign_no``, signs in again once when the platform says the sign-in has
expired, and signs everyone out (9002) when it closes. It raises ``PlatformRefusal`` for
business refusals (``infcode -1``) and ``PlatformUnreachable`` when no valid answer arrived.
Every request passes the ``Guard`` (circuit breaker, bound on requests in flight); queries may
be retried by it, mutating transactions never are.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from sidecar.config import InstitutionConfig, PlatformConfig
from sidecar.deadlines import NO_DEADLINE, Deadline
from sidecar.observability import instruments
from sidecar.platform.envelope import (
    INF_TIME_FORMAT,
    EnvelopeError,
    RequestEnvelope,
    ResponseEnvelope,
    beijing_now,
)
from sidecar.platform.errors import PlatformRefusal, PlatformUnreachable
from sidecar.platform.freshness import ReplayGuard, StaleAnswer
from sidecar.platform.msgid import MsgIds
from sidecar.platform.resilience import Guard
from sidecar.platform.sealing import Plain, Sealing
from sidecar.platform.security.errors import SecurityError
from sidecar.platform.transport import Transport, TransportError, TransportTimeout

log = logging.getLogger(__name__)


BeforeSend = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class Operator:
    """Who acts: the envelope's ``opter`` and ``opter_name``."""

    id: str
    name: str


class TransactionRecorder(Protocol):
    """Records every transaction: ``intent`` before it is sent (raising stops the send) and
    ``outcome`` after it, whatever happened (the audit trail implements it)."""

    async def intent(
        self, infno: str, msgid: str, operator: str, data: Mapping[str, Any]
    ) -> object: ...

    async def outcome(self, ticket: object, *, infcode: str, error: str, answer: Any) -> None: ...


class PlatformClient:
    """Sends transactions to one platform gateway on behalf of operators.

    It takes ``[institution]`` (the envelope's institution fields, the sign-in IP) and
    ``[platform]`` (timeout, sign-in codes and expiry texts, the freshness window, and
    ``[platform.resilience]`` for the gateway's guard) as pydantic validated them. ``mac`` is
    this host's, not configuration.
    """

    def __init__(
        self,
        transport: Transport,
        msgids: MsgIds,
        institution: InstitutionConfig,
        config: PlatformConfig,
        *,
        mac: str = "00:00:00:00:00:00",
        clock: Callable[[], Any] = beijing_now,
        sealing: Sealing | None = None,
        tracer: trace.Tracer | None = None,
        meter: metrics.Meter | None = None,
        recorder: TransactionRecorder | None = None,
    ) -> None:
        meter = meter or metrics.NoOpMeter("yibao-sidecar")
        self._transport = transport
        self._recorder = recorder
        self._guard = Guard(config.url, config.resilience, meter)
        self._sealing = sealing or Plain()
        self._replays = ReplayGuard(config.freshness_window_seconds)
        self._msgids = msgids
        self._institution = institution
        self._codes = config.transactions
        self._timeout = config.timeout_seconds
        self._expired_markers = config.sign_in_expired_messages
        self._mac = mac
        self._clock = clock
        self._sign_nos: dict[str, str] = {}
        self._sign_in_locks: dict[str, asyncio.Lock] = {}
        self._tracer = tracer or trace.NoOpTracer()
        self._duration = instruments.duration(
            meter, instruments.PLATFORM_DURATION, "platform transaction latency, per attempt"
        )
        self._verify_duration = instruments.duration(
            meter, instruments.VERIFY_DURATION, "opening a secured answer: signature, decryption"
        )
        self._scheme = type(self._sealing).__name__
        self._verifies = not isinstance(self._sealing, Plain)

    async def call(
        self,
        infno: str,
        data: Mapping[str, Any],
        operator: Operator,
        *,
        insured_area: str = "",
        deadline: Deadline = NO_DEADLINE,
        retry_safe: bool = False,
        before_send: BeforeSend | None = None,
    ) -> Any:
        """Run one business transaction and return its ``output``.

        ``deadline`` is the caller's: sign-in, the transaction, retries and a renewed attempt
        all fit before it, so no platform call outlives the gRPC call that asked.
        ``retry_safe`` (queries only) lets the guard retry when no valid answer came.
        ``before_send`` is awaited with each msgid of this transaction (not of sign-in) before
        its request leaves, so a caller can record it durably first (a settlement must be
        reversible by its msgid even if this process dies while the answer is on its way).
        """
        try:
            async with asyncio.timeout(deadline.left()):
                if not retry_safe:
                    return await self._call(infno, data, operator, insured_area, 1, before_send)
                async for attempt in self._guard.retrying(infno):
                    with attempt:
                        number = attempt.retry_state.attempt_number
                        return await self._call(
                            infno, data, operator, insured_area, number, before_send
                        )
                raise AssertionError("unreachable: retrying re-raises the last failure")
        except TimeoutError:
            raise PlatformUnreachable(
                "the caller's deadline passed before the platform answered",
                sent=True,
                timed_out=True,
            ) from None

    async def _call(
        self,
        infno: str,
        data: Mapping[str, Any],
        operator: Operator,
        insured_area: str,
        attempt: int,
        before_send: BeforeSend | None = None,
    ) -> Any:
        sign_no = await self._sign_no(operator)
        try:
            return await self._exchange(
                infno,
                data,
                operator,
                sign_no,
                insured_area,
                None,
                attempt=attempt,
                before_send=before_send,
            )
        except PlatformRefusal as refusal:
            if not self._sign_in_expired(refusal):
                raise
        log.info("platform.sign_in_expired", extra={"infno": infno})
        sign_no = await self._sign_no(operator, stale=sign_no)
        return await self._exchange(
            infno,
            data,
            operator,
            sign_no,
            insured_area,
            None,
            attempt=attempt + 1,
            before_send=before_send,
        )

    async def close(self) -> None:
        """Sign every operator out (best effort), then close the tunnel."""
        for operator_id, sign_no in list(self._sign_nos.items()):
            operator = Operator(operator_id, operator_id)
            data = {"signOut": {"sign_no": sign_no, "opter_no": operator_id}}
            try:
                await self._exchange(self._codes.sign_out, data, operator, sign_no, "", 5.0)
            except (PlatformRefusal, PlatformUnreachable) as exc:
                log.warning("platform.sign_out_failed", extra={"error": type(exc).__name__})
        self._sign_nos.clear()
        await self._transport.aclose()

    def _sign_in_expired(self, refusal: PlatformRefusal) -> bool:
        return any(marker in refusal.err_msg for marker in self._expired_markers)

    async def _sign_no(self, operator: Operator, *, stale: str | None = None) -> str:
        lock = self._sign_in_locks.setdefault(operator.id, asyncio.Lock())
        async with lock:
            current = self._sign_nos.get(operator.id)
            if current is not None and current != stale:
                return current
            ip = self._institution.sign_in_ip
            data = {"signIn": {"opter_no": operator.id, "mac": self._mac, "ip": ip}}
            output = await self._exchange(self._codes.sign_in, data, operator, "", "", None)
            try:
                sign_no = str(output["signinoutb"]["sign_no"])
            except (KeyError, TypeError):
                raise PlatformUnreachable("sign-in answer has no sign_no", sent=True) from None
            if not 0 < len(sign_no) <= 30:
                raise PlatformUnreachable("sign-in answer has a malformed sign_no", sent=True)
            self._sign_nos[operator.id] = sign_no
            log.info("platform.signed_in", extra={"operator": operator.id})
            return sign_no

    async def _exchange(
        self,
        infno: str,
        data: Mapping[str, Any],
        operator: Operator,
        sign_no: str,
        insured_area: str,
        timeout: float | None,
        *,
        attempt: int = 1,
        before_send: BeforeSend | None = None,
    ) -> Any:
        """One request and its answer, in a client span named for the transaction.

        One span per attempt: every attempt is its own exchange with its own msgid, so a retried
        query shows as sibling spans with ``yibao.platform.attempt`` 1, 2, ...
        """
        msgid = await self._msgids.next()
        if before_send is not None:
            await before_send(msgid)
        with self._tracer.start_as_current_span(
            f"platform {infno}",
            kind=SpanKind.CLIENT,
            attributes={
                "yibao.platform.infno": infno,
                "yibao.platform.msgid": msgid,
                "yibao.platform.attempt": attempt,
                "yibao.platform.breaker": self._guard.breaker_state,
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            started = time.perf_counter()
            infcode = "none"
            try:
                output, infcode = await self._recorded(
                    infno, msgid, data, operator, sign_no, insured_area, timeout
                )
                return output
            except PlatformRefusal as refusal:
                infcode = str(refusal.infcode)
                span.set_status(Status(StatusCode.ERROR, "refused"))
                raise
            except PlatformUnreachable as failure:
                span.set_attribute("yibao.platform.sent", failure.sent)
                span.set_status(Status(StatusCode.ERROR, "unreachable"))
                raise
            finally:
                span.set_attribute("yibao.platform.infcode", infcode)
                elapsed = instruments.elapsed_seconds(started, time.perf_counter())
                self._duration.record(elapsed, {"infno": infno, "infcode": infcode})

    async def _recorded(
        self,
        infno: str,
        msgid: str,
        data: Mapping[str, Any],
        operator: Operator,
        sign_no: str,
        insured_area: str,
        timeout: float | None,
    ) -> tuple[Any, str]:
        """``_send`` between the recorder's intent (durable first) and its outcome."""
        recorder = self._recorder
        if recorder is None:
            return await self._send(infno, msgid, data, operator, sign_no, insured_area, timeout)
        ticket = await recorder.intent(infno, msgid, operator.id, data)
        infcode, error, answer = "none", "", None
        try:
            output, infcode = await self._send(
                infno, msgid, data, operator, sign_no, insured_area, timeout
            )
            answer = output
            return output, infcode
        except PlatformRefusal as refusal:
            infcode, error, answer = str(refusal.infcode), "PlatformRefusal", refusal.err_msg
            raise
        except PlatformUnreachable as failure:
            error = "PlatformUnreachable" + (" (sent)" if failure.sent else " (not sent)")
            answer = str(failure)
            raise
        except BaseException as exc:  # cancelled by the deadline, or a bug: still an outcome
            error = type(exc).__name__
            raise
        finally:
            await recorder.outcome(ticket, infcode=infcode, error=error, answer=answer)

    async def _send(
        self,
        infno: str,
        msgid: str,
        data: Mapping[str, Any],
        operator: Operator,
        sign_no: str,
        insured_area: str,
        timeout: float | None,
    ) -> tuple[Any, str]:
        institution = self._institution
        envelope = RequestEnvelope(
            infno=infno,
            msgid=msgid,
            mdtrtarea_admvs=institution.division,
            insuplc_admdvs=insured_area,
            recer_sys_code=institution.receiver_system_code,
            infver=institution.interface_version,
            opter_type=institution.operator_type,
            opter=operator.id,
            opter_name=operator.name,
            inf_time=self._clock().strftime(INF_TIME_FORMAT),
            fixmedins_code=institution.code,
            fixmedins_name=institution.name,
            sign_no=sign_no,
            input=dict(data),
        )
        body_out = await self._sealing.seal(envelope.to_dict())
        try:
            body = await self._guard.guarded(
                lambda: self._transport.post(body_out, timeout=timeout or self._timeout)
            )
        except TransportTimeout as exc:
            raise PlatformUnreachable(str(exc), sent=exc.sent, timed_out=True) from None
        except TransportError as exc:
            raise PlatformUnreachable(str(exc), sent=exc.sent) from None
        try:
            answer = ResponseEnvelope.from_dict(self._open(body))
        except EnvelopeError as exc:
            raise PlatformUnreachable(f"malformed answer to {infno}: {exc}", sent=True) from None
        except SecurityError as exc:
            # Never use an answer whose signature did not verify: for the caller it is as if no
            # answer came (a settlement must then be confirmed or reversed, not assumed).
            raise PlatformUnreachable(f"untrusted answer to {infno}: {exc}", sent=True) from None
        try:
            self._replays.check(answer, msgid)
        except StaleAnswer as exc:
            raise PlatformUnreachable(f"stale answer to {infno}: {exc}", sent=True) from None
        if not answer.ok:
            raise PlatformRefusal(infno, answer.infcode, answer.err_msg or "(no message)")
        return answer.output, str(answer.infcode)

    def _open(self, body: bytes) -> Any:
        """The plain answer; a secured one in an ``answer verify`` span (signature, decryption)."""
        if not self._verifies:
            return self._sealing.open(body)
        started = time.perf_counter()
        outcome = "error"
        with self._tracer.start_as_current_span(
            "answer verify",
            attributes={"yibao.security.scheme": self._scheme},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                opened = self._sealing.open(body)
                outcome = "ok"
                return opened
            except (SecurityError, EnvelopeError) as exc:
                outcome = "refused" if isinstance(exc, SecurityError) else "malformed"
                span.set_status(Status(StatusCode.ERROR, outcome))
                raise
            finally:
                span.set_attribute("yibao.security.outcome", outcome)
                elapsed = instruments.elapsed_seconds(started, time.perf_counter())
                self._verify_duration.record(elapsed, {"scheme": self._scheme, "outcome": outcome})

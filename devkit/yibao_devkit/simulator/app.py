"""The simulated platform gateway as a plain ASGI application.

One endpoint, ``POST /fsi/api/rsfComIfsService/callService``, takes a JSON envelope and answers
one. HTTP status codes report transport problems only; business outcomes travel in ``infcode``:

* a body that is not UTF-8 JSON with an object at the top answers **HTTP 400** with a response
  envelope (``infcode`` -1, :data:`~yibao_devkit.simulator.errors.MALFORMED_BODY`), so a client sees
  both that the request can never succeed and the platform-style reason;
* every parseable body answers **HTTP 200**, with ``infcode`` 0 or -1 (envelope errors, unknown
  ``infno``, sign-in problems and business refusals alike);
* other paths answer 404, other methods on the endpoint 405, bodies over 1 MiB 413.

Every request takes one path, :meth:`PlatformSimulator.respond`:

1. **decode** the body (exact decimals) and count it;
2. **fault** switches for its ``infno`` act (see :mod:`~yibao_devkit.simulator.faults`);
3. **open**: verify the signature and decrypt ``input`` (:mod:`~yibao_devkit.simulator.security`;
   plain JSON until the SM2/SM4 schemes are implemented there);
4. check the envelope, **replay** an identical resend of an accepted msgid or refuse a different
   body under it (:mod:`~yibao_devkit.simulator.messages`), check institution, area and sign-in;
5. **dispatch** to the transaction's handler;
6. **seal**: encrypt and sign the answer (same module as step 3), remember it under the msgid;
7. **encode**, or drop the connection when a fault says so.

:meth:`PlatformSimulator.handle` runs steps 1 and 3 to 6 without faults, synchronously, for
tests that need no network.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import itertools
import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from yibao_devkit.simulator import envelope, errors, messages, times
from yibao_devkit.simulator.confirmation import SecondConfirmation
from yibao_devkit.simulator.counters import CallCounter
from yibao_devkit.simulator.faults import Fault, FaultKind, Faults, parse
from yibao_devkit.simulator.gateway_login import TOKEN_PATH, OAuth2Gate
from yibao_devkit.simulator.ledger import Ledger
from yibao_devkit.simulator.messages import MessageLog
from yibao_devkit.simulator.population import Population
from yibao_devkit.simulator.security import MessageSecurity, PlainText
from yibao_devkit.simulator.signin import SignInBook
from yibao_devkit.simulator.state import PlatformState
from yibao_devkit.simulator.transactions import (
    Transaction,
    TransactionContext,
    TransactionRegistry,
    default_registry,
)
from yibao_devkit.simulator.wire import Json, JsonObject, dumps

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]

ENDPOINT_PATH: Final = "/fsi/api/rsfComIfsService/callService"
MAX_BODY_BYTES: Final = 1024 * 1024
DEFAULT_INSTITUTION_CODE: Final = "H44030500001"  # H + county division (深圳市南山区) + serial
DEFAULT_INSTITUTION_NAME: Final = "深圳市南山区模拟医院"
DEFAULT_DIVISION: Final = "440300"  # 深圳市, the treatment-area division this platform serves
# An ASGI extension (see hosting.py): sending an event of this type asks the server to abort the
# connection the request came on, without an answer.
DROP_CONNECTION: Final = "yibao.simulator.drop_connection"
SIGNATURE_FIELDS: Final = ("cainfo", "signData")  # left out of the msgid replay fingerprint

_JSON_HEADERS: Final = [(b"content-type", b"application/json;charset=UTF-8")]
_TEXT_HEADERS: Final = [(b"content-type", b"text/plain;charset=UTF-8")]


@dataclass(frozen=True)
class Reply:
    """What to send back: an HTTP status, body and headers; ``drop`` aborts the connection."""

    status: int
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...] = tuple(_JSON_HEADERS)
    drop: bool = False


DROP: Final = Reply(0, b"", (), drop=True)


class PlatformSimulator:
    """An in-memory stand-in for one region's platform gateway, serving one institution."""

    def __init__(
        self,
        population: Population,
        *,
        institution_code: str = DEFAULT_INSTITUTION_CODE,
        institution_name: str = DEFAULT_INSTITUTION_NAME,
        division: str = DEFAULT_DIVISION,
        transactions: TransactionRegistry | None = None,
        clock: times.Clock = times.beijing_now,
        security: MessageSecurity | None = None,
        faults: Faults | None = None,
        gateway_login: OAuth2Gate | None = None,
    ) -> None:
        self.population = population
        self.institution_code = institution_code
        self.division = division
        self.transactions = transactions if transactions is not None else default_registry()
        self.state = PlatformState.fresh(
            population,
            division=division,
            institution_code=institution_code,
            institution_name=institution_name,
            opened=clock().date(),
        )
        self.calls = CallCounter()
        self.faults = faults if faults is not None else Faults()
        self.messages = MessageLog()
        self.security: MessageSecurity = security if security is not None else PlainText()
        self.gateway_login = gateway_login  # an OAuth2 access gateway in front, if any
        self._clock = clock
        self._serial = itertools.count(1)
        # Set while the server shuts down, so that requests held by a fault stop waiting.
        self._closing = asyncio.Event()

    @property
    def sign_ins(self) -> SignInBook:
        """The sign-in sessions, for tests that need to inspect or drop them."""
        return self.state.sign_ins

    @property
    def ledger(self) -> Ledger:
        """Every charge, cancellation and reversal, for tests to audit."""
        return self.state.ledger

    @property
    def confirmation(self) -> SecondConfirmation:
        """The regional second-confirmation switch of settlements and its expected codes."""
        return self.state.confirmation

    def issue_ec_token(self, certno: str) -> str:
        """An e-voucher token for the enrolled person with resident ID ``certno``.

        Stands in for the person showing their medical-insurance QR code; the token is valid for
        a few minutes (see :mod:`~yibao_devkit.simulator.ectokens`). ValueError for anyone the
        platform has no record of.
        """
        person = self.population.find(certno)
        if person is None or not person.enrolled:
            raise ValueError("the platform has no record of this person")
        return self.state.ec_tokens.issue(certno, self._clock())

    def set_fault(self, spec: str) -> None:
        """Switch a fault on from its command-line form, e.g. ``2207:commit-then-drop:1``."""
        infno, fault = parse(spec)
        self.faults.set(infno, fault)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Read the whole body before answering anything: an HTTP/2 stream answered while its
        # DATA frames are still arriving makes Hypercorn drop the entire connection.
        body = await _read_body(receive)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        authorization = headers.get("authorization", "")
        if self.gateway_login is not None and scope["path"] == TOKEN_PATH:
            status, answer = self.gateway_login.grant(authorization, body or b"")
            await _respond(send, status, answer, [(b"content-type", b"application/json")])
            return
        if scope["path"] != ENDPOINT_PATH:
            await _respond(send, 404, b"Not Found", _TEXT_HEADERS)
            return
        if scope["method"] != "POST":
            await _respond(send, 405, b"Method Not Allowed", [*_TEXT_HEADERS, (b"allow", b"POST")])
            return
        if body is None:
            await _respond(send, 413, b"Payload Too Large", _TEXT_HEADERS)
            return
        if self.gateway_login is not None and not self.gateway_login.allows(authorization):
            self.calls.record(None)
            await _respond(
                send, 401, b"Unauthorized", [*_TEXT_HEADERS, (b"www-authenticate", b"Bearer")]
            )
            return
        reply = await self.respond(body)
        if reply.drop:
            await _drop(scope, send)
            return
        await _respond(send, reply.status, reply.body, list(reply.headers))

    async def respond(self, body: bytes) -> Reply:
        """Answer one request body along the single request path, faults included."""
        received = self._clock()
        decoded, infno = self._decode(body)
        if decoded is None:
            return self._encoded(400, self._refused(received, errors.MALFORMED_BODY))
        fault = self.faults.take(infno) if infno is not None else None
        if fault is not None:
            early = await self._before(fault, received)
            if early is not None:
                return early
        status, answer = self._exchange(decoded, received)
        if fault is None:
            return self._encoded(status, answer)
        if fault.kind is FaultKind.BAD_SIGNATURE:
            answer = self.security.corrupt_signature(answer)
        reply = self._encoded(status, answer)
        if fault.kind is FaultKind.MALFORMED_JSON:
            return Reply(status, reply.body[: len(reply.body) // 2])
        if fault.kind is FaultKind.COMMIT_THEN_DROP:
            return DROP
        return reply

    def handle(self, body: bytes) -> tuple[int, JsonObject]:
        """Answer one request body without faults: the HTTP status and the response envelope."""
        received = self._clock()
        decoded, _ = self._decode(body)
        if decoded is None:
            return 400, self._refused(received, errors.MALFORMED_BODY)
        return self._exchange(decoded, received)

    def _decode(self, body: bytes) -> tuple[MutableMapping[str, Any] | None, str | None]:
        """The decoded body and its ``infno`` if readable; counts the request either way."""
        decoded = _decode(body)
        # Under scheme B the infno travels encrypted: the security step reads it (unverified).
        readable = self.security.routing_infno(decoded) if decoded is not None else None
        self.calls.record(readable)
        return decoded, readable

    async def _before(self, fault: Fault, received: dt.datetime) -> Reply | None:
        """Apply the part of ``fault`` that acts before the transaction; a reply ends it there."""
        kind = fault.kind
        if kind in (FaultKind.LATENCY, FaultKind.TIMEOUT) and await self._held(fault.delay):
            return DROP  # shutting down: give up the held request, as a dying server does
        if kind in (FaultKind.TIMEOUT, FaultKind.RESET):
            return DROP
        if kind is FaultKind.HTTP_5XX:
            return Reply(fault.status, b"Service Unavailable", tuple(_TEXT_HEADERS))
        if kind is FaultKind.REFUSE:
            return self._encoded(200, self._refused(received, fault.err_msg))
        if kind is FaultKind.EXPIRED_SIGN_IN:
            self.sign_ins.invalidate_all()
        return None

    def release_held(self) -> None:
        """Stop waiting on requests held by ``latency``/``timeout`` faults: they are dropped.

        The hosting calls this as soon as shutdown begins, so that a 30-second hold cannot
        delay stopping the simulator.
        """
        self._closing.set()

    async def _held(self, seconds: float) -> bool:
        """Wait ``seconds``; whether the server began shutting down meanwhile."""
        try:
            await asyncio.wait_for(self._closing.wait(), seconds)
        except TimeoutError:
            return False
        return True

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """Acknowledge start-up and shutdown; shutdown releases requests held by faults."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._closing.clear()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self._closing.set()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _exchange(
        self, decoded: MutableMapping[str, Any], received: dt.datetime
    ) -> tuple[int, JsonObject]:
        """Open, check, replay or dispatch, and seal one decoded request."""
        try:
            opened = self.security.open(decoded)
            request = envelope.parse_request(opened)
            fingerprint = messages.fingerprint(
                {key: value for key, value in opened.items() if key not in SIGNATURE_FIELDS}
            )
            accepted = self.messages.get(request.msgid)
            if accepted is not None:
                if accepted.fingerprint == fingerprint:
                    return 200, accepted.answer
                raise errors.Refusal(errors.MSGID_DUPLICATE.format(msgid=request.msgid))
            transaction = self._admit(request)
        except errors.Refusal as refusal:
            return 200, self._refused(received, refusal.err_msg)
        context = TransactionContext(envelope=request, now=received, state=self.state)
        try:
            answer = self._answer(received, output=transaction.handler(request.input, context))
        except errors.Refusal as refusal:
            answer = self._answer(received, err_msg=refusal.err_msg)
        sealed = self.security.seal(answer)
        self.messages.remember(request.msgid, messages.Accepted(fingerprint, sealed))
        return 200, sealed

    def _admit(self, request: envelope.RequestEnvelope) -> Transaction:
        """The transaction to run, once the checks common to all of them pass."""
        transaction = self.transactions.get(request.infno)
        if transaction is None:
            raise errors.Refusal(errors.UNKNOWN_INFNO.format(infno=request.infno))
        if request.fixmedins_code != self.institution_code:
            raise errors.Refusal(errors.UNKNOWN_INSTITUTION.format(code=request.fixmedins_code))
        if request.mdtrtarea_admvs != self.division:
            raise errors.Refusal(errors.WRONG_AREA.format(code=request.mdtrtarea_admvs))
        if transaction.requires_sign_in and not self.sign_ins.is_valid(
            request.opter, request.sign_no
        ):
            raise errors.Refusal(errors.SIGN_IN_INVALID)
        return transaction

    def _refused(self, received: dt.datetime, err_msg: str) -> JsonObject:
        return self.security.seal(self._answer(received, err_msg=err_msg))

    def _encoded(self, status: int, answer: JsonObject) -> Reply:
        return Reply(status, dumps(answer).encode("utf-8"))

    def _answer(
        self, received: dt.datetime, *, err_msg: str | None = None, output: Json = None
    ) -> JsonObject:
        serial = next(self._serial) % 10**10
        return envelope.response(
            infcode=-1 if err_msg is not None else 0,
            inf_refmsgid=f"{self.division}{received:{times.COMPACT_FORMAT}}{serial:010d}",
            refmsg_time=times.format_millis(received),
            respond_time=times.format_millis(self._clock()),
            err_msg=err_msg,
            output=output if err_msg is None else None,
        )


async def _drop(scope: Scope, send: Send) -> None:
    """Abort the request's connection without answering, through the hosting's extension."""
    if DROP_CONNECTION not in (scope.get("extensions") or {}):
        raise ConnectionAbortedError("this server cannot drop connections on request")
    await send({"type": DROP_CONNECTION})


def _decode(body: bytes) -> MutableMapping[str, Any] | None:
    """The JSON object in ``body``, or ``None`` if it is not UTF-8 JSON with an object on top.

    Decimal numbers become :class:`decimal.Decimal` so that amounts stay exact; ``NaN`` and
    ``Infinity``, which are not JSON, are refused.
    """
    try:
        value = json.loads(
            body.decode("utf-8"), parse_float=decimal.Decimal, parse_constant=_refuse_constant
        )
    except (UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or ``None`` if it exceeds :data:`MAX_BODY_BYTES`.

    An oversized body is still read to its end (and discarded): a client that sends its whole
    body before reading the answer, as HTTP/2 clients do, would otherwise stall on flow control.
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= MAX_BODY_BYTES:
            chunks.append(chunk)
        else:
            chunks.clear()
        if not message.get("more_body", False):
            return b"".join(chunks) if size <= MAX_BODY_BYTES else None


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode("ascii"))],
        }
    )
    await send({"type": "http.response.body", "body": body})

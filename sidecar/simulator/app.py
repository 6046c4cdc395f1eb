"""The simulated platform gateway as a plain ASGI application.

One endpoint, ``POST /fsi/api/rsfComIfsService/callService``, takes a JSON envelope and answers
one. HTTP status codes report transport problems only; business outcomes travel in ``infcode``:

* a body that is not UTF-8 JSON with an object at the top answers **HTTP 400** with a response
  envelope (``infcode`` -1, :data:`~sidecar.simulator.errors.MALFORMED_BODY`), so a client sees
  both that the request can never succeed and the platform-style reason;
* every parseable body answers **HTTP 200**, with ``infcode`` 0 or -1 (envelope errors, unknown
  ``infno``, sign-in problems and business refusals alike);
* other paths answer 404, other methods on the endpoint 405, bodies over 1 MiB 413.

All checks that apply to every transaction (envelope, institution, area, sign-in, counting) run
in :meth:`PlatformSimulator.handle`, the single dispatch path; per-transaction fault switches will
hook in there too.
"""

from __future__ import annotations

import datetime as dt
import decimal
import itertools
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final, TypeAlias

from sidecar.simulator import envelope, errors, times
from sidecar.simulator.counters import CallCounter
from sidecar.simulator.population import Population
from sidecar.simulator.signin import SignInBook
from sidecar.simulator.state import PlatformState
from sidecar.simulator.transactions import TransactionContext, TransactionRegistry, default_registry
from sidecar.simulator.wire import Json, JsonObject, dumps

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]

ENDPOINT_PATH: Final = "/fsi/api/rsfComIfsService/callService"
MAX_BODY_BYTES: Final = 1024 * 1024
DEFAULT_INSTITUTION_CODE: Final = "H44030500001"  # H + county division (深圳市南山区) + serial
DEFAULT_INSTITUTION_NAME: Final = "深圳市南山区模拟医院"
DEFAULT_DIVISION: Final = "440300"  # 深圳市, the treatment-area division this platform serves

_JSON_HEADERS: Final = [(b"content-type", b"application/json;charset=UTF-8")]
_TEXT_HEADERS: Final = [(b"content-type", b"text/plain;charset=UTF-8")]


class PlatformSimulator:
    """An in-memory stand-in for one region's platform gateway, serving one institution."""

    def __init__(
        self,
        population: Population,
        *,
        institution_code: str = DEFAULT_INSTITUTION_CODE,
        division: str = DEFAULT_DIVISION,
        transactions: TransactionRegistry | None = None,
        clock: times.Clock = times.beijing_now,
    ) -> None:
        self.population = population
        self.institution_code = institution_code
        self.division = division
        self.transactions = transactions if transactions is not None else default_registry()
        self.state = PlatformState(population=population, sign_ins=SignInBook(division))
        self.calls = CallCounter()
        self._clock = clock
        self._serial = itertools.count(1)

    @property
    def sign_ins(self) -> SignInBook:
        """The sign-in sessions, for tests that need to inspect or drop them."""
        return self.state.sign_ins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Read the whole body before answering anything: an HTTP/2 stream answered while its
        # DATA frames are still arriving makes Hypercorn drop the entire connection.
        body = await _read_body(receive)
        if scope["path"] != ENDPOINT_PATH:
            await _respond(send, 404, b"Not Found", _TEXT_HEADERS)
            return
        if scope["method"] != "POST":
            await _respond(send, 405, b"Method Not Allowed", [*_TEXT_HEADERS, (b"allow", b"POST")])
            return
        if body is None:
            await _respond(send, 413, b"Payload Too Large", _TEXT_HEADERS)
            return
        status, answer = self.handle(body)
        await _respond(send, status, dumps(answer).encode("utf-8"), _JSON_HEADERS)

    def handle(self, body: bytes) -> tuple[int, JsonObject]:
        """Answer one request body: the HTTP status and the response envelope."""
        received = self._clock()
        decoded = _decode(body)
        if decoded is None:
            self.calls.record(None)
            return 400, self._answer(received, err_msg=errors.MALFORMED_BODY)
        infno = decoded.get("infno")
        self.calls.record(infno if isinstance(infno, str) else None)
        try:
            output = self._dispatch(decoded, received)
        except errors.Refusal as refusal:
            return 200, self._answer(received, err_msg=refusal.err_msg)
        return 200, self._answer(received, output=output)

    def _dispatch(self, body: MutableMapping[str, Any], received: dt.datetime) -> JsonObject:
        request = envelope.parse_request(body)
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
        context = TransactionContext(envelope=request, now=received, state=self.state)
        return transaction.handler(request.input, context)

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


async def _lifespan(receive: Receive, send: Send) -> None:
    """Acknowledge start-up and shutdown; the simulator needs no resources of its own."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return

"""The platform client's logic against a scripted transport: sign-in, retries, the breaker.

The transport seam is replaced by a script of answers so that each failure can be placed
exactly; the real simulator over mTLS is exercised in tests/integration.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import pytest

from sidecar.config import InstitutionConfig, PlatformConfig, ResilienceConfig
from sidecar.deadlines import Deadline
from sidecar.platform.client import Operator, PlatformClient
from sidecar.platform.envelope import beijing_now
from sidecar.platform.errors import PlatformRefusal, PlatformUnreachable
from sidecar.platform.msgid import MsgIdGenerator
from sidecar.platform.transport import TransportError

OK = {"infcode": 0, "output": {"ok": True}}
SIGNED_IN = {"infcode": 0, "output": {"signinoutb": {"sign_no": "S1", "sign_time": "x"}}}
REFUSED = {"infcode": -1, "err_msg": "未查询到该人员的参保信息"}
EXPIRED = {"infcode": -1, "err_msg": "签到信息已失效，请重新签到"}
Step = dict[str, Any] | Exception


def stamp(serial: int) -> dict[str, str]:
    """What the platform puts on every answer: its message ID and the time it answered."""
    now = beijing_now()
    return {
        "inf_refmsgid": f"440300{now:%Y%m%d%H%M%S}{serial:010d}",
        "respond_time": f"{now:%Y%m%d%H%M%S}{now.microsecond // 1000:03d}",
    }


class ScriptedTransport:
    """Answers sign-in automatically and each business request with the next scripted step."""

    def __init__(self, script: list[Step], *, delay: float = 0.0) -> None:
        self.script = script
        self.delay = delay
        self.requests: list[dict[str, Any]] = []
        self.serials = itertools.count(1)
        self.in_flight = 0
        self.most_in_flight = 0

    async def post(self, body: bytes, *, timeout: float) -> bytes:
        request = json.loads(body)
        self.requests.append(request)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            step: Step = SIGNED_IN if request["infno"] == "9001" else self.script.pop(0)
            if isinstance(step, Exception):
                raise step
            return json.dumps({**stamp(next(self.serials)), **step}, ensure_ascii=False).encode()
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        pass

    def count(self, infno: str) -> int:
        return sum(1 for r in self.requests if r["infno"] == infno)


INSTITUTION = InstitutionConfig(code="H44030500001", name="测试", division="440300")


def client(transport: ScriptedTransport, **policy: Any) -> PlatformClient:
    """A client configured as ``[institution]`` and ``[platform]`` would configure it."""
    resilience = {
        "retry_initial_backoff_seconds": 0.001,
        "retry_max_backoff_seconds": 0.002,
        **policy,
    }
    platform = PlatformConfig(
        url="https://platform.test",
        ca_file="unused.pem",
        client_cert_file="unused.pem",
        client_key_file="unused.pem",
        timeout_seconds=5,
        resilience=ResilienceConfig(**resilience),
    )
    return PlatformClient(transport, MsgIdGenerator("H44030500001"), INSTITUTION, platform)


OPERATOR = Operator("op-1", "op-1")


async def query(platform: PlatformClient) -> Any:
    return await platform.call("1101", {"data": {}}, OPERATOR, retry_safe=True)


async def test_sign_in_happens_once_and_the_envelope_is_complete() -> None:
    transport = ScriptedTransport([OK, OK])
    platform = client(transport)
    assert await query(platform) == {"ok": True}
    await query(platform)
    assert transport.count("9001") == 1
    business = transport.requests[-1]
    assert business["sign_no"] == "S1"
    assert business["opter"] == "op-1"
    assert business["fixmedins_code"] == "H44030500001"
    assert len({r["msgid"] for r in transport.requests}) == len(transport.requests)


async def test_the_configured_sections_reach_the_wire() -> None:
    """[institution] and [platform] as pydantic validated them, with nothing copied in between:
    a region's own sign-in and sign-out codes, its expiry text, the sign-in IP, the envelope's
    institution fields, and the host's MAC address the composition root passes."""
    expired = {"infcode": -1, "err_msg": "会话已过期"}
    transport = ScriptedTransport([SIGNED_IN, expired, SIGNED_IN, OK, OK])
    institution = InstitutionConfig(
        code="H44030500001",
        name="某某医院",
        division="440305",
        receiver_system_code="GD_LOCAL",
        interface_version="V2.1",
        operator_type="1",
        sign_in_ip="10.1.2.3",
    )
    platform = PlatformConfig(
        url="https://platform.test",
        ca_file="unused.pem",
        client_cert_file="unused.pem",
        client_key_file="unused.pem",
        sign_in_expired_messages=("会话已过期",),
        transactions={"sign_in": "9101", "sign_out": "9102"},
    )
    mac = "02:00:00:00:00:01"
    link = PlatformClient(transport, MsgIdGenerator("H44030500001"), institution, platform, mac=mac)
    assert await query(link) == {"ok": True}
    await link.close()
    assert [r["infno"] for r in transport.requests] == ["9101", "1101", "9101", "1101", "9102"]
    sign_in = transport.requests[0]
    assert sign_in["input"]["signIn"] == {"opter_no": "op-1", "mac": mac, "ip": "10.1.2.3"}
    for request in transport.requests:
        assert request["fixmedins_code"] == "H44030500001"
        assert request["fixmedins_name"] == "某某医院"
        assert request["mdtrtarea_admvs"] == "440305"
        assert request["recer_sys_code"] == "GD_LOCAL"
        assert request["infver"] == "V2.1"
        assert request["opter_type"] == "1"


async def test_queries_are_retried_when_no_answer_arrived() -> None:
    transport = ScriptedTransport(
        [TransportError("reset", sent=True), TransportError("reset", sent=True), OK]
    )
    assert await query(client(transport)) == {"ok": True}
    assert transport.count("1101") == 3


async def test_retries_stop_after_the_configured_attempts() -> None:
    transport = ScriptedTransport([TransportError("reset", sent=True)] * 5)
    with pytest.raises(PlatformUnreachable):
        await query(client(transport, retry_attempts=2))
    assert transport.count("1101") == 2


async def test_mutating_transactions_are_never_retried() -> None:
    transport = ScriptedTransport([TransportError("reset", sent=True), OK])
    with pytest.raises(PlatformUnreachable) as caught:
        await client(transport).call("2207", {"data": {}}, OPERATOR)
    assert caught.value.sent
    assert transport.count("2207") == 1


async def test_refusals_are_not_retried() -> None:
    transport = ScriptedTransport([REFUSED, OK])
    with pytest.raises(PlatformRefusal) as caught:
        await query(client(transport))
    assert caught.value.err_msg == "未查询到该人员的参保信息"
    assert transport.count("1101") == 1


@pytest.mark.slow
async def test_an_expired_sign_in_is_renewed_once() -> None:
    transport = ScriptedTransport([EXPIRED, OK])
    assert await query(client(transport)) == {"ok": True}
    assert transport.count("9001") == 2
    transport = ScriptedTransport([EXPIRED, EXPIRED])
    with pytest.raises(PlatformRefusal):
        await client(transport).call("1101", {"data": {}}, OPERATOR)
    assert transport.count("9001") == 2


async def test_the_breaker_opens_fails_fast_and_business_refusals_do_not_trip_it() -> None:
    transport = ScriptedTransport([REFUSED] * 5 + [TransportError("down", sent=False)] * 3 + [OK])
    platform = client(
        transport, retry_attempts=1, breaker_failure_threshold=3, breaker_open_seconds=30
    )
    for _ in range(5):
        with pytest.raises(PlatformRefusal):
            await query(platform)
    for _ in range(3):
        with pytest.raises(PlatformUnreachable) as caught:
            await query(platform)
        assert caught.value.retry_after is None
    sent_before = len(transport.requests)
    with pytest.raises(PlatformUnreachable) as caught:
        await query(platform)
    assert caught.value.retry_after is not None and 29 < caught.value.retry_after <= 30
    assert not caught.value.sent
    assert len(transport.requests) == sent_before  # nothing reached the platform


async def test_requests_in_flight_are_bounded() -> None:
    transport = ScriptedTransport([OK] * 20, delay=0.02)
    platform = client(transport, max_in_flight=3)
    await query(platform)  # sign in first
    await asyncio.gather(*(query(platform) for _ in range(19)))
    assert transport.most_in_flight == 3


async def test_the_deadline_bounds_retries_and_sign_in() -> None:
    transport = ScriptedTransport([TransportError("reset", sent=True)] * 50, delay=0.05)
    with pytest.raises(PlatformUnreachable) as caught:
        await client(transport, retry_attempts=10).call(
            "1101", {"data": {}}, OPERATOR, retry_safe=True, deadline=Deadline.after(0.12)
        )
    assert caught.value.timed_out
    assert transport.count("1101") <= 3


async def test_a_stale_answer_is_refused() -> None:
    old = {**OK, "respond_time": "20200101000000000"}
    transport = ScriptedTransport([old, old, old])
    with pytest.raises(PlatformUnreachable, match="stale answer to 1101: respond_time is outside"):
        await query(client(transport))


async def test_a_replayed_answer_for_another_request_is_refused() -> None:
    replayed = {**OK, "inf_refmsgid": "440300202611260930000000000001"}
    transport = ScriptedTransport([OK, replayed, replayed])
    platform = client(transport, retry_attempts=1)
    await query(platform)
    await query(platform)
    with pytest.raises(PlatformUnreachable, match="already used for another request"):
        await query(platform)


async def test_an_answer_without_a_time_is_refused() -> None:
    transport = ScriptedTransport([{**OK, "respond_time": ""}])
    with pytest.raises(PlatformUnreachable, match="no respond_time"):
        await client(transport).call("1101", {"data": {}}, OPERATOR)

"""The platform envelope codec and message-ID generator."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.platform.envelope import BEIJING, EnvelopeError, RequestEnvelope, ResponseEnvelope
from sidecar.platform.msgid import MsgIdGenerator


def envelope(**changes: Any) -> RequestEnvelope:
    fields: dict[str, Any] = {
        "infno": "1101",
        "msgid": "H11010500001" + "20261126093000" + "0001",
        "mdtrtarea_admvs": "110105",
        "recer_sys_code": "MBS_LOCAL",
        "infver": "V1.0",
        "opter_type": "3",
        "opter": "emp-001",
        "opter_name": "emp-001",
        "inf_time": "2026-11-26 09:30:00",
        "fixmedins_code": "H11010500001",
        "fixmedins_name": "测试机构",
        "sign_no": "123456",
        "input": {"data": {"psn_name": "张三"}},
    }
    fields.update(changes)
    return RequestEnvelope(**fields)


def test_request_serialises_every_field_as_utf8_json() -> None:
    body = json.loads(envelope().to_json().decode("utf-8"))
    assert body["infno"] == "1101"
    assert body["input"] == {"data": {"psn_name": "张三"}}
    for key in ("insuplc_admdvs", "dev_no", "dev_safe_info", "cainfo", "signtype"):
        assert body[key] == ""
    assert "张三".encode() in envelope().to_json()  # not \\u-escaped


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"infno": "11011"}, "infno must be 4 digits"),
        ({"infno": ""}, "infno must not be empty"),
        ({"msgid": "short"}, "msgid must be"),
        ({"mdtrtarea_admvs": "11010"}, "mdtrtarea_admvs must be 6 digits"),
        ({"insuplc_admdvs": "abcdef"}, "insuplc_admdvs must be 6 digits"),
        ({"inf_time": "2026-11-26T09:30:00"}, "inf_time must be written"),
        ({"opter": "x" * 31}, "opter is longer than 30"),
        ({"fixmedins_name": "名" * 201}, "fixmedins_name is longer than 200"),
    ],
)
def test_request_fields_are_checked(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(EnvelopeError, match=message):
        envelope(**changes)


def test_oversized_input_is_refused() -> None:
    with pytest.raises(EnvelopeError, match="input is longer than 40000"):
        envelope(input={"data": {"x": "a" * 40_001}}).to_json()


def test_response_parses_amounts_exactly() -> None:
    body = json.dumps(
        {
            "infcode": 0,
            "inf_refmsgid": "110105202611260930001234567890",
            "refmsg_time": "20261126093000123",
            "respond_time": "20261126093000456",
            "err_msg": None,
            "output": {"insuinfo": [{"balc": 1234.56}]},
        }
    ).encode()
    answer = ResponseEnvelope.parse(body)
    assert answer.ok
    assert answer.output["insuinfo"][0]["balc"] == Decimal("1234.56")


def test_refusal_and_string_infcode() -> None:
    answer = ResponseEnvelope.parse(b'{"infcode": "-1", "err_msg": "\\u672a\\u67e5\\u8be2\\u5230"}')
    assert not answer.ok and answer.infcode == -1 and answer.err_msg == "未查询到"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1,2]", "not a JSON object"),
        (b"{}", "infcode is missing"),
        (b'{"infcode": true}', "infcode is missing"),
        (b'{"infcode": 0, "err_msg": 5}', "err_msg is not a string"),
        (b'{"infcode": 0, "respond_time": "2026"}', "respond_time must be written"),
        (b"[" * 100_000, "nested too deeply|not JSON"),
    ],
)
def test_malformed_answers_are_clean_errors(body: bytes, message: str) -> None:
    with pytest.raises(EnvelopeError, match=message):
        ResponseEnvelope.parse(body)


@given(st.binary(max_size=300))
def test_no_bytes_crash_the_parser(body: bytes) -> None:
    with contextlib.suppress(EnvelopeError):
        ResponseEnvelope.parse(body)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(
    st.dictionaries(
        st.sampled_from(["infcode", "err_msg", "output", "inf_refmsgid", "x"]), json_values
    )
)
def test_no_json_object_crashes_the_parser(data: dict[str, Any]) -> None:
    with contextlib.suppress(EnvelopeError):
        ResponseEnvelope.parse(json.dumps(data).encode())


async def test_msgids_are_unique_ordered_and_well_formed() -> None:
    generator = MsgIdGenerator("H11010500001")
    ids = await asyncio.gather(*(generator.next() for _ in range(3000)))
    assert len(set(ids)) == 3000
    assert all(len(i) == 30 and i.startswith("H11010500001") and i[12:].isdigit() for i in ids)


async def test_msgid_sequence_waits_for_the_next_second_when_exhausted() -> None:
    times = iter(
        [dt.datetime(2026, 11, 26, 9, 29, 59, tzinfo=BEIJING)]  # created the second before
        + [dt.datetime(2026, 11, 26, 9, 30, 0, tzinfo=BEIJING)] * 10_001
        + [dt.datetime(2026, 11, 26, 9, 30, 1, tzinfo=BEIJING)] * 2
    )
    generator = MsgIdGenerator("H11010500001", clock=lambda: next(times))
    ids = [await generator.next() for _ in range(10_001)]
    assert ids[9_999].endswith("202611260930009999")
    assert ids[10_000].endswith("202611260930010000")
    assert len(set(ids)) == 10_001


async def test_msgid_never_reuses_a_second_when_the_clock_steps_back() -> None:
    times = iter(
        [
            dt.datetime(2026, 11, 26, 9, 30, 4, tzinfo=BEIJING),  # created
            dt.datetime(2026, 11, 26, 9, 30, 5, tzinfo=BEIJING),
            dt.datetime(2026, 11, 26, 9, 30, 4, tzinfo=BEIJING),
        ]
    )
    generator = MsgIdGenerator("H11010500001", clock=lambda: next(times))
    first, second = await generator.next(), await generator.next()
    assert first != second and second.endswith("202611260930050001")


async def test_replicas_with_distinct_slots_never_collide_even_in_the_same_second() -> None:
    created = dt.datetime(2026, 11, 26, 9, 29, 59, tzinfo=BEIJING)
    same_second = dt.datetime(2026, 11, 26, 9, 30, 0, tzinfo=BEIJING)
    later = dt.datetime(2026, 11, 26, 9, 30, 1, tzinfo=BEIJING)
    replicas = 4
    calls = {slot: 0 for slot in range(replicas)}

    def clock_for(slot: int):  # type: ignore[no-untyped-def]
        def clock() -> dt.datetime:
            calls[slot] += 1
            if calls[slot] == 1:
                return created
            return same_second if calls[slot] <= 2501 else later

        return clock

    generators = [
        MsgIdGenerator("H11010500001", clock=clock_for(slot), slot=slot, slots=replicas)
        for slot in range(replicas)
    ]
    assert generators[0].per_second == 2500

    async def run(generator: MsgIdGenerator) -> list[str]:
        ids = []
        for _ in range(2600):  # more than a second's share: the rest go to the next second
            ids.append(await generator.next())
            await asyncio.sleep(0)  # interleave the replicas
        return ids

    results = await asyncio.gather(*(run(g) for g in generators))
    everything = [i for ids in results for i in ids]
    assert len(everything) == len(set(everything)) == replicas * 2600
    for slot, ids in enumerate(results):
        sequences = {int(i[-4:]) for i in ids if i[12:26] == "20261126093000"}
        assert sequences == set(range(slot * 2500, (slot + 1) * 2500))


async def test_a_restarted_generator_never_reuses_its_predecessors_second() -> None:
    """SIGKILL and restart within one second: the new generator waits for the next second."""
    second = dt.datetime(2026, 11, 26, 9, 30, 0, tzinfo=BEIJING)
    one = dt.timedelta(seconds=1)
    before_times = iter([second - one, second])
    predecessor = MsgIdGenerator("H11010500001", clock=lambda: next(before_times))
    restarted_times = iter([second, second, second + one])
    restarted = MsgIdGenerator("H11010500001", clock=lambda: next(restarted_times))
    assert (await predecessor.next()).endswith("202611260930000000")
    assert (await restarted.next()).endswith("202611260930010000")


def test_a_slot_outside_the_partition_is_refused() -> None:
    with pytest.raises(ValueError, match="slot must be in"):
        MsgIdGenerator("H11010500001", slot=3, slots=3)

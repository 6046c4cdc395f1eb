"""The pieces of the filter chain that judge untrusted input, one at a time.

* the rich status of any ``GatewayError`` fits gRPC's trailers, however many violations;
* every Timestamp and Duration, at any depth, in repeated fields and map values, is checked;
* tenant and operator values that look like personal data are refused without being quoted.
"""

from __future__ import annotations

import base64
import functools

import grpc
import pytest
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    message_factory,
    timestamp_pb2,
)
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar import errors
from sidecar.errors import FieldViolation, GatewayError
from sidecar.interceptors.caller import OPERATOR_KEY, TENANT_KEY, problem, well_formed
from sidecar.interceptors.time_fields import time_violations
from yibao_devkit.simulator.population import Population

TRAILER_LIMIT = 16 * 1024  # grpc.max_metadata_size's default, on the client


def trailer_bytes(error: GatewayError) -> int:
    """What the status puts in the trailers: grpc-status, grpc-message, grpc-status-details-bin."""
    status = error.to_status()
    details = dict(status.trailing_metadata)["grpc-status-details-bin"]
    message = status.details.encode()
    percent = sum(3 if b < 0x20 or b > 0x7E or b == 0x25 else 1 for b in message)
    return len(base64.b64encode(details)) + percent + 64


@settings(max_examples=40, deadline=None)
@given(
    count=st.integers(min_value=0, max_value=5000),
    field=st.text(min_size=0, max_size=400),
    description=st.text(min_size=0, max_size=400),
    platform_message=st.text(max_size=5000),
)
def test_any_rich_status_fits_the_trailers(
    count: int, field: str, description: str, platform_message: str
) -> None:
    violations = [FieldViolation(f"{field}[{i}]", description) for i in range(count)]
    error = errors.invalid_request(violations)
    error.metadata = {"platform_message": platform_message, "platform_code": "-1"}
    assert trailer_bytes(error) < TRAILER_LIMIT * 3 // 4  # 6 KiB base64 + 1 KiB encoded
    parsed = status_pb2.Status.FromString(
        dict(error.to_status().trailing_metadata)["grpc-status-details-bin"]
    )
    info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    assert parsed.details[0].Unpack(info) and info.reason == "INVALID_REQUEST"
    if count:
        assert parsed.details[1].Unpack(bad)
        listed = [v for v in bad.field_violations if v.field or v.description.startswith("must")]
        if count > errors.MAX_VIOLATIONS:
            assert info.metadata["violations"] == str(count)
            rest = bad.field_violations[-1]
            assert rest.field == "" and f"({count} in all)" in rest.description
        else:
            assert len(bad.field_violations) == count and "violations" not in info.metadata
        assert len(listed) <= errors.MAX_VIOLATIONS + 1


def test_the_first_violations_are_listed_in_order_and_the_rest_counted() -> None:
    violations = [FieldViolation(f"fee_items[{i}].quantity", "bad") for i in range(45)]
    status = errors.invalid_request(violations).to_status()
    parsed = status_pb2.Status.FromString(dict(status.trailing_metadata)["grpc-status-details-bin"])
    bad = error_details_pb2.BadRequest()
    parsed.details[1].Unpack(bad)
    fields = [v.field for v in bad.field_violations]
    assert fields == [f"fee_items[{i}].quantity" for i in range(20)] + [""]
    assert (
        bad.field_violations[-1].description == "and 25 more invalid fields, not listed (45 in all)"
    )
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert status.details.endswith("fee_items[19].quantity and 25 more")


# -- Timestamp and Duration anywhere ------------------------------------------------------------


@functools.cache
def _nested_message_class() -> type[Message]:
    """``Outer { Inner one; repeated Inner many; map<string, Inner> by_key; Timestamp at; }``,
    ``Inner { Timestamp t; repeated Duration d; Inner next; }``."""
    pool = descriptor_pool.DescriptorPool()
    for dependency in (timestamp_pb2, duration_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        dependency.DESCRIPTOR.CopyToProto(proto)
        pool.Add(proto)
    f = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="nested_times.proto",
        package="t",
        syntax="proto3",
        dependency=["google/protobuf/timestamp.proto", "google/protobuf/duration.proto"],
    )
    inner = file.message_type.add(name="Inner")
    inner.field.add(name="t", number=1, type=f.TYPE_MESSAGE, type_name=".google.protobuf.Timestamp")
    inner.field.add(
        name="d",
        number=2,
        type=f.TYPE_MESSAGE,
        label=f.LABEL_REPEATED,
        type_name=".google.protobuf.Duration",
    )
    inner.field.add(name="next", number=3, type=f.TYPE_MESSAGE, type_name=".t.Inner")
    outer = file.message_type.add(name="Outer")
    entry = outer.nested_type.add(name="ByKeyEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=f.TYPE_STRING)
    entry.field.add(name="value", number=2, type=f.TYPE_MESSAGE, type_name=".t.Inner")
    outer.field.add(name="one", number=1, type=f.TYPE_MESSAGE, type_name=".t.Inner")
    outer.field.add(
        name="many", number=2, type=f.TYPE_MESSAGE, label=f.LABEL_REPEATED, type_name=".t.Inner"
    )
    outer.field.add(
        name="by_key",
        number=3,
        type=f.TYPE_MESSAGE,
        label=f.LABEL_REPEATED,
        type_name=".t.Outer.ByKeyEntry",
    )
    outer.field.add(
        name="at", number=4, type=f.TYPE_MESSAGE, type_name=".google.protobuf.Timestamp"
    )
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("t.Outer"))


def test_bad_times_are_found_at_any_depth_and_named_by_path() -> None:
    outer = _nested_message_class()()
    outer.at.seconds = 2**40  # type: ignore[attr-defined]
    outer.one.next.next.t.nanos = -1  # type: ignore[attr-defined]
    outer.one.t.seconds = 253_402_300_799  # type: ignore[attr-defined]  # the last valid second
    many = outer.many  # type: ignore[attr-defined]
    many.add()
    many.add().d.add(seconds=1, nanos=-1)  # signs differ
    many[1].d.add(seconds=-315_576_000_000, nanos=-999_999_999)  # the most negative valid
    outer.by_key["13912345678"].d.add(seconds=315_576_000_001)  # type: ignore[attr-defined]
    found = {(v.field, v.description) for v in time_violations(outer)}
    assert found == {
        ("at", "must be a valid timestamp"),
        ("one.next.next.t", "must be a valid timestamp"),
        ("many[1].d[0]", "must be a valid duration"),
        ("by_key[*].d[0]", "must be a valid duration"),  # a string key is never echoed
    }


@settings(max_examples=200, deadline=None)
@given(seconds=st.integers(-(2**62), 2**62), nanos=st.integers(-(2**31), 2**31 - 1))
def test_a_timestamp_is_refused_exactly_when_it_has_no_json_form(seconds: int, nanos: int) -> None:
    outer = _nested_message_class()()
    outer.at.seconds, outer.at.nanos = seconds, nanos  # type: ignore[attr-defined]
    try:
        outer.at.ToJsonString()  # type: ignore[attr-defined]
        representable = True
    except ValueError:
        representable = False
    assert (time_violations(outer) == []) == representable


# -- tenant and operator ------------------------------------------------------------------------

PEOPLE = Population.generate(7, 30).people


@pytest.mark.parametrize("key", [TENANT_KEY, OPERATOR_KEY])
@pytest.mark.parametrize(
    "value",
    [
        *(p.certno for p in PEOPLE[:10]),
        "110105491231002",  # first-generation, 15 digits
        "13912345678",
        "139-1234-5678",
        "139.1234.5678",
        "op_13912345678",
        "6222020200112233445",  # a bank card number
        "zhang.san@corp.example",
        "Zhang San",
        "-leading-dash",
        "",
    ],
)
def test_personal_or_malformed_values_are_refused_without_being_quoted(
    key: str, value: str
) -> None:
    reason = problem(key, value)
    assert reason is not None
    assert not value or value not in reason
    assert well_formed({key: value}) == well_formed({})


@pytest.mark.parametrize(
    "value", ["im-bot-01", "hr-clerk-7", "E10023", "op.2024-11", "acme_corp", "a", "x" * 30]
)
def test_opaque_handles_are_accepted(value: str) -> None:
    assert problem(TENANT_KEY, value) is None
    assert problem(OPERATOR_KEY, value) is None
    assert well_formed({TENANT_KEY: value, OPERATOR_KEY: value}).operator == value


def test_lengths() -> None:
    assert problem(OPERATOR_KEY, "o" * 31) is not None  # the envelope's opter: 30 characters
    assert problem(TENANT_KEY, "t" * 64) is None
    assert problem(TENANT_KEY, "t" * 65) is not None

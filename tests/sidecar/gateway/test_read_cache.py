"""ReadCache: hits, misses, TTL, the entry bound, invalidation per subject, and its counter."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from sidecar._proto.yibao.gateway.v1 import common_pb2 as common
from sidecar._proto.yibao.gateway.v1 import gateway_pb2 as gateway
from sidecar.config import CacheConfig
from sidecar.gateway.cache import CACHE_REQUESTS, ReadCache

KEY = b"k" * 32


@dataclass(frozen=True)
class Who:
    certificate_type_code: str
    certificate_number: str


ALICE, BOB = Who("01", "110105199001011234"), Who("01", "110105199001015678")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def request(number: str, name: str = "张三") -> gateway.GetEnrollmentRequest:
    return gateway.GetEnrollmentRequest(
        subject=common.DataSubject(
            certificate_type=common.CERTIFICATE_TYPE_RESIDENT_ID_CARD,
            certificate_number=number,
            name=name,
        )
    )


class Loader:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> gateway.GetEnrollmentResponse:
        self.calls += 1
        answer = gateway.GetEnrollmentResponse()
        answer.person.age = self.calls
        return answer


def counts(reader: InMemoryMetricReader) -> dict[tuple[str, str], int]:
    data = reader.get_metrics_data()
    found: dict[tuple[str, str], int] = {}
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == CACHE_REQUESTS:
                    for point in metric.data.data_points:  # type: ignore[union-attr]
                        attrs = point.attributes or {}
                        key = (str(attrs["function"]), str(attrs["result"]))
                        found[key] = int(point.value)  # type: ignore[union-attr]
    return found


def cache(clock: Clock, **kwargs: object) -> tuple[ReadCache, InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("test")
    config = CacheConfig.model_validate({"ttl_seconds": 30.0, "max_entries": 100, **kwargs})
    return ReadCache(config, key=KEY, meter=meter, clock=clock), reader


async def test_hits_misses_and_ttl() -> None:
    clock, load = Clock(), Loader()
    reads, reader = cache(clock)
    ask = request(ALICE.certificate_number)
    first = await reads.read("GetEnrollment", "t", ALICE, ask, load)
    second = await reads.read("GetEnrollment", "t", ALICE, ask, load)
    assert first == second and load.calls == 1
    second.person.age = 99  # callers may mutate their copy; the cache keeps its own
    assert (await reads.read("GetEnrollment", "t", ALICE, ask, load)).person.age == 1
    clock.now += 30.0
    assert (await reads.read("GetEnrollment", "t", ALICE, ask, load)).person.age == 2
    assert counts(reader) == {("GetEnrollment", "hit"): 2, ("GetEnrollment", "miss"): 2}


async def test_the_key_covers_function_tenant_and_the_whole_request() -> None:
    clock, load = Clock(), Loader()
    reads, _ = cache(clock)
    ask = request(ALICE.certificate_number)
    await reads.read("GetEnrollment", "t", ALICE, ask, load)
    await reads.read("GetAccount", "t", ALICE, ask, load)
    await reads.read("GetEnrollment", "other-tenant", ALICE, ask, load)
    await reads.read("GetEnrollment", "t", ALICE, request(ALICE.certificate_number, "李四"), load)
    assert load.calls == 4  # a wrong name never gets the right name's answer


async def test_invalidation_drops_every_entry_of_the_subject_only() -> None:
    clock, load = Clock(), Loader()
    reads, _ = cache(clock)
    for who in (ALICE, BOB):
        for function in ("GetEnrollment", "GetAccount"):
            await reads.read(function, "t", who, request(who.certificate_number), load)
    assert reads.invalidate(ALICE) == 2
    assert len(reads) == 2
    await reads.read("GetEnrollment", "t", BOB, request(BOB.certificate_number), load)
    await reads.read("GetEnrollment", "t", ALICE, request(ALICE.certificate_number), load)
    assert load.calls == 5


async def test_a_load_overtaken_by_an_invalidation_is_not_stored() -> None:
    clock = Clock()
    reads, _ = cache(clock)
    release = asyncio.Event()

    async def slow() -> gateway.GetEnrollmentResponse:
        await release.wait()
        return gateway.GetEnrollmentResponse()

    ask = request(ALICE.certificate_number)
    pending = asyncio.create_task(reads.read("GetEnrollment", "t", ALICE, ask, slow))
    await asyncio.sleep(0)
    reads.invalidate(ALICE)  # e.g. a registration was submitted meanwhile
    release.set()
    await pending
    assert len(reads) == 0


async def test_errors_are_not_cached_and_the_bound_evicts_the_oldest() -> None:
    clock, load = Clock(), Loader()
    reads, _ = cache(clock, max_entries=2)

    async def failing() -> gateway.GetEnrollmentResponse:
        raise RuntimeError("platform down")

    ask = request(ALICE.certificate_number)
    for _ in range(2):
        with pytest.raises(RuntimeError):
            await reads.read("GetEnrollment", "t", ALICE, ask, failing)
    assert len(reads) == 0
    for number in ("1", "2", "3"):
        await reads.read("GetEnrollment", "t", Who("01", number), request(number), load)
    assert len(reads) == 2
    await reads.read("GetEnrollment", "t", Who("01", "1"), request("1"), load)
    assert load.calls == 4  # "1" was evicted


async def test_ttl_zero_is_off_and_counts_nothing() -> None:
    clock, load = Clock(), Loader()
    reads, reader = cache(clock, ttl_seconds=0.0)
    ask = request(ALICE.certificate_number)
    await reads.read("GetEnrollment", "t", ALICE, ask, load)
    await reads.read("GetEnrollment", "t", ALICE, ask, load)
    assert load.calls == 2 and len(reads) == 0 and counts(reader) == {}


def test_subject_keys_are_keyed_hashes_not_the_number() -> None:
    reads, _ = cache(Clock())
    other = ReadCache(CacheConfig(ttl_seconds=1, max_entries=1), key=b"x" * 32)
    digest = reads.subject_key(ALICE)
    assert ALICE.certificate_number.encode() not in digest and len(digest) == 32
    assert digest != other.subject_key(ALICE)  # depends on the process's key
    assert digest == reads.subject_key(Who("01", ALICE.certificate_number))

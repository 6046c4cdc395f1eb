"""Sealed columns (sidecar/keys/fieldcrypt.py): round trip, bound to their row, tamper-evident."""

from __future__ import annotations

import asyncio
import secrets

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.keys.fieldcrypt import MAGIC, FieldSealer, HostKeyWrapper, SealError, context
from sidecar.store import StoreUnavailable

ROW = context("settlement_records.psn_no", "acme", "req-1")
PSN_NO = b"43000011000000000001"


def sealer(**kwargs: object) -> FieldSealer:
    return FieldSealer(HostKeyWrapper(secrets.token_bytes(16)), **kwargs)  # type: ignore[arg-type]


@settings(max_examples=50, deadline=None)
@given(plain=st.binary(max_size=300), parts=st.lists(st.text(max_size=20), max_size=4))
def test_round_trip_and_no_plaintext_in_the_sealed_value(plain: bytes, parts: list[str]) -> None:
    s = sealer()
    where = context(*parts)
    sealed = asyncio.run(s.seal(plain, where))
    assert sealed.startswith(MAGIC)
    assert asyncio.run(s.open(sealed, where)) == plain
    if len(plain) >= 8:
        assert plain not in sealed


async def test_the_same_value_seals_differently_each_time() -> None:
    s = sealer()
    one, two = await s.seal(PSN_NO, ROW), await s.seal(PSN_NO, ROW)
    assert one != two and PSN_NO not in one
    assert await s.open(one, ROW) == await s.open(two, ROW) == PSN_NO


@pytest.mark.parametrize(
    "other",
    [
        context("settlement_records.psn_no", "acme", "req-2"),  # another row
        context("settlement_records.psn_no", "other", "req-1"),  # another tenant
        context("offsite_requests.outcome", "acme", "req-1"),  # another column
        context("settlement_records.psn_no", "acme", "req-1", ""),  # not a prefix trick
        b"",
    ],
)
async def test_a_value_does_not_open_in_another_context(other: bytes) -> None:
    s = sealer()
    sealed = await s.seal(PSN_NO, ROW)
    with pytest.raises(SealError):
        await s.open(sealed, other)


def test_contexts_are_unambiguous() -> None:
    assert context("ab", "c") != context("a", "bc")
    assert context("a") != context("a", "")


async def test_any_changed_byte_is_refused() -> None:
    s = sealer()
    sealed = await s.seal(PSN_NO, ROW)
    for index in range(len(sealed)):
        changed = bytearray(sealed)
        changed[index] ^= 0x01
        with pytest.raises(SealError):
            await s.open(bytes(changed), ROW)
    for cut in (0, 3, 6, len(sealed) - 1):
        with pytest.raises(SealError):
            await s.open(sealed[:cut], ROW)


async def test_another_key_wrapper_cannot_open_and_errors_are_store_unavailable() -> None:
    sealed = await sealer().seal(PSN_NO, ROW)
    with pytest.raises(
        StoreUnavailable
    ) as caught:  # components fail closed as on an unreadable store
        await sealer().open(sealed, ROW)
    assert PSN_NO.decode() not in str(caught.value)


class CountingWrapper(HostKeyWrapper):
    def __init__(self) -> None:
        super().__init__(secrets.token_bytes(16))
        self.made = self.unwrapped = 0

    async def new(self) -> tuple[bytes, bytes]:
        self.made += 1
        return await super().new()

    async def unwrap(self, blob: bytes) -> bytes:
        self.unwrapped += 1
        return await super().unwrap(blob)


async def test_one_data_key_until_rotation_and_old_values_still_open() -> None:
    now = [0.0]
    wrapper = CountingWrapper()
    s = FieldSealer(wrapper, rotation_seconds=100.0, clock=lambda: now[0])
    first = [await s.seal(PSN_NO, ROW) for _ in range(3)]
    assert wrapper.made == 1
    now[0] = 100.0
    second = await s.seal(PSN_NO, ROW)
    assert wrapper.made == 2 and second[:40] != first[0][:40]
    fresh = FieldSealer(wrapper)  # another process: unwraps each data key once, then caches it
    for value in [*first, second, *first]:
        assert await fresh.open(value, ROW) == PSN_NO
    assert wrapper.unwrapped == 2


async def test_key_wrapper_failures_become_seal_errors_without_details() -> None:
    class Down(HostKeyWrapper):
        async def new(self) -> tuple[bytes, bytes]:
            raise RuntimeError("token gone: " + PSN_NO.decode())

    with pytest.raises(SealError) as caught:
        await FieldSealer(Down(secrets.token_bytes(16))).seal(PSN_NO, ROW)
    assert str(caught.value) == "no data key: RuntimeError"


async def test_the_host_wrapper_warns_once_that_it_is_for_development(
    caplog: pytest.LogCaptureFixture,
) -> None:
    s = FieldSealer(HostKeyWrapper(secrets.token_bytes(16)), rotation_seconds=0.0)
    with caplog.at_level("WARNING", logger="sidecar.keys.fieldcrypt"):
        for _ in range(3):
            await s.seal(PSN_NO, ROW)
    assert [r.getMessage() for r in caplog.records] == ["fieldcrypt.host_key_development_only"]

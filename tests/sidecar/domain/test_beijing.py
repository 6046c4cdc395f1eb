"""The contract's "today" is the Beijing date of an instant, whatever the host's zone and hour."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator

import pytest

from sidecar.domain.beijing import BEIJING, beijing_now, beijing_today
from sidecar.domain.validation import check_resident_id, resident_id_check_char


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


@pytest.fixture(params=["America/Los_Angeles", "Pacific/Kiritimati", "UTC"])
def host_zone(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The process's local time zone, as TZ sets it for the host."""
    monkeypatch.setenv("TZ", request.param)
    time.tzset()
    yield request.param
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize(
    ("instant", "beijing_date"),
    [
        ("2026-12-05T15:59:59+00:00", "2026-12-05"),  # 23:59:59 in Beijing
        ("2026-12-05T16:00:00+00:00", "2026-12-06"),  # the window opens: Beijing's next day
        ("2026-12-05T17:30:00+00:00", "2026-12-06"),
        ("2026-12-05T23:59:59+00:00", "2026-12-06"),
        ("2026-12-05T09:30:00-08:00", "2026-12-06"),  # the same instant seen from Los Angeles
        ("2026-12-06T07:30:00+14:00", "2026-12-06"),  # and from Kiritimati
        ("2026-12-31T16:00:00+00:00", "2027-01-01"),  # a new year in Beijing first
    ],
)
def test_today_is_the_beijing_date_of_the_instant(
    host_zone: str, instant: str, beijing_date: str
) -> None:
    assert beijing_today(lambda: at(instant)).isoformat() == beijing_date
    assert beijing_now(lambda: at(instant)).utcoffset() == dt.timedelta(hours=8)


def test_the_host_clock_is_read_as_an_instant_not_in_the_host_zone(host_zone: str) -> None:
    before = dt.datetime.now(BEIJING).date()
    today = beijing_today()
    after = dt.datetime.now(BEIJING).date()
    assert today in (before, after)


def test_a_naive_clock_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        beijing_today(lambda: dt.datetime(2026, 12, 5, 17, 30))  # naive on purpose


def test_someone_born_today_in_beijing_is_not_born_in_the_future(host_zone: str) -> None:
    born = beijing_today()
    first17 = f"110105{born:%Y%m%d}123"
    number = first17 + resident_id_check_char(first17)
    assert check_resident_id(number) is None
    yesterday = born - dt.timedelta(days=1)  # a frozen "today": born tomorrow is refused
    assert check_resident_id(number, today=yesterday) == "birth date is out of range"

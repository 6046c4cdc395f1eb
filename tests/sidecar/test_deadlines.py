"""The caller's deadline as one immutable type on an injected monotonic clock."""

from __future__ import annotations

import pytest

from sidecar.deadlines import NO_DEADLINE, Deadline


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_time_left_runs_down_with_the_clock_and_never_goes_negative() -> None:
    clock = Clock()
    deadline = Deadline.after(5, clock)
    assert deadline.left() == 5 and not deadline.expired
    clock.now += 4.5
    assert deadline.left() == pytest.approx(0.5)
    clock.now += 1
    assert deadline.left() == 0.0 and deadline.expired


def test_a_caller_without_a_deadline_is_unbounded_until_a_default_is_chosen() -> None:
    clock = Clock()
    unbounded = Deadline.of_budget(None, clock)
    assert unbounded.left() is None and not unbounded.expired and not unbounded.bounded
    clock.now += 10**9
    assert not unbounded.expired
    assert unbounded.minus(5).left() is None  # a reserve of nothing is nothing
    defaulted = unbounded.or_after(90)
    assert defaulted.left() == 90 and defaulted.bounded
    assert Deadline.after(3, clock).or_after(90).left() == 3  # the caller's own comes first


def test_grpc_budgets_become_deadlines_including_ones_already_passed() -> None:
    clock = Clock()
    assert Deadline.of_budget(2.5, clock).left() == 2.5
    passed = Deadline.of_budget(-1, clock)
    assert passed.expired and passed.left() == 0.0


def test_the_earlier_of_two_and_a_reserve_kept_back() -> None:
    clock = Clock()
    soon, late = Deadline.after(1, clock), Deadline.after(9, clock)
    assert soon.earlier(late) is soon and late.earlier(soon) is soon
    assert soon.earlier(NO_DEADLINE) is soon and NO_DEADLINE.earlier(late) is late
    assert late.minus(2).left() == 7
    assert soon.minus(2).expired  # a reserve larger than what is left: nothing left to spend


def test_deadlines_are_values() -> None:
    clock = Clock()
    deadline = Deadline.after(1, clock)
    with pytest.raises(AttributeError):
        deadline.at = 0  # type: ignore[misc]
    assert deadline == Deadline(1001.0) and hash(deadline) == hash(Deadline(1001.0))

"""The record of the TLS key in the token, on a fake clock (no sleeping, no host time zone)."""

from __future__ import annotations

from sidecar.platform.tls_key_faults import KeyFault, KeyFaults


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_new_record_is_usable() -> None:
    faults = KeyFaults(Clock())
    assert faults.fault is None
    assert faults.unusable_for() is None


def test_the_first_failure_since_the_last_good_handshake_sets_the_time() -> None:
    clock = Clock()
    faults = KeyFaults(clock)
    faults.unusable("pkcs11", "Object handle invalid")
    clock.now += 12.5
    faults.unusable("key_load", "failed to load private key from crypto engine")  # later: kept
    assert faults.fault == KeyFault("pkcs11", "Object handle invalid", 1000.0)
    assert faults.unusable_for() == 12.5


def test_a_good_handshake_clears_the_fault_and_a_new_failure_starts_afresh() -> None:
    clock = Clock()
    faults = KeyFaults(clock)
    faults.unusable("pkcs11", "Object handle invalid")
    clock.now += 40
    faults.usable()
    assert faults.fault is None and faults.unusable_for() is None
    clock.now += 5
    faults.unusable("pkcs11", "Token not present")
    assert faults.unusable_for() == 0.0
    assert faults.fault is not None and faults.fault.since == 1045.0


def test_listeners_hear_each_change_once() -> None:
    clock = Clock()
    faults = KeyFaults(clock)
    heard: list[KeyFault | None] = []
    faults.subscribe(heard.append)
    faults.usable()  # already usable: nothing to tell
    faults.unusable("pkcs11", "Object handle invalid")
    faults.unusable("pkcs11", "Object handle invalid")
    clock.now += 1
    faults.usable()
    faults.usable()
    assert heard == [KeyFault("pkcs11", "Object handle invalid", 1000.0), None]

"""Simulator switches the settlement work added: per-person confirmation codes, demo tokens."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from yibao_devkit.simulator.confirmation import SecondConfirmation
from yibao_devkit.simulator.population import Population


def test_a_per_person_code_is_the_same_for_every_visit_of_that_person() -> None:
    switch = SecondConfirmation()
    switch.require("dynamic_token", per_person=True)
    code = switch.expected("P1")
    assert switch.field == "dynamic_token"
    assert switch.matches("P1", "V1", code) and switch.matches("P1", "V2", code)
    assert switch.expected("P2") != code or switch.expected("P3") != code
    switch.require("sms_code")  # per visit again
    assert switch.expected("P1", "V1") != switch.expected("P1", "V2") or (
        switch.expected("P1", "V3") != switch.expected("P1", "V1")
    )


def test_the_simulator_prints_e_voucher_tokens_for_the_people_named(tmp_path: Path) -> None:
    people = Population.generate(7, 20).examples()
    command = [sys.executable, "-m", "yibao_devkit.simulator", "--listen", "127.0.0.1:0",
               "--seed", "7", "--pki-dir", str(tmp_path / "pki"),
               "--population-size", "20"]  # fmt: skip
    refused = subprocess.run(
        [*command, "--issue-ec-token", people.unknown.certno],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2
    assert "--issue-ec-token" in refused.stderr
    process = subprocess.Popen(
        [*command, "--issue-ec-token", people.employee.certno],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = dict(process.stdout.readline().rstrip("\n").split(": ", 1) for _ in range(5))
        token = lines[f"ec_token_{people.employee.certno}"]
        assert token.startswith("ec") and len(token) == 42
    finally:
        process.send_signal(signal.SIGTERM)  # (may arrive before its handler: not checked here)
        process.wait(timeout=30)

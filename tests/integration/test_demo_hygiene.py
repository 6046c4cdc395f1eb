"""The whole demo, run as `make demo` runs it, leaves no personal data in any log line.

Every process's output is captured: the demo's own stdout (the transcript) and stderr, the
sidecar's JSON log and the simulator's log. The sidecar runs at DEBUG, so even debug lines are
searched. Each is scanned for the synthetic population's identifiers: resident ID numbers,
names, platform person numbers, and phone numbers and e-voucher tokens where the population has
them, and the phone numbers the demo's requests carry. The transcript shows masked forms by
design (``110105********1234``, ``张**``).

Spans: the demo exports none (no exporter is configured in it); the in-memory span scan lives
with the telemetry tests.

The demo runs under host time zones far from Beijing (``TZ=America/Los_Angeles``, UTC-8, and
``TZ=Pacific/Kiritimati``, UTC+14), once on the real clock and once with every process's clock
frozen by libfaketime at 17:30 UTC, inside the daily window (16:00-24:00 UTC) where the host's
date is not Beijing's: the contract's dates are Beijing dates, whatever the host's zone and hour.
A step that fails ends the demo in one line naming the RPC, the status and the reason.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from yibao_devkit import demo as demo_module
from yibao_devkit.demo import SEED
from yibao_devkit.simulator.population import Person, Population

# The attributes of a synthetic person that identify them (those the population has).
IDENTIFYING = ("certno", "psn_name", "psn_no", "phone", "tel", "mob", "ec_token", "token")


def identifiers(person: Person) -> list[str]:
    found = []
    for attribute in IDENTIFYING:
        value = getattr(person, attribute, None)
        if isinstance(value, str) and value:
            found.append(value)
    return found


def kind_of(person: Person, value: str) -> str:
    return next(a for a in IDENTIFYING if getattr(person, a, None) == value)


# In the 16:00-24:00 UTC window: the host's date (UTC, or Los Angeles) is the day before Beijing's.
IN_THE_WINDOW = "2026-12-05 17:30:00 UTC"


def run_demo(
    workdir: Path,
    softhsm_lib: Path,
    *,
    tz: str,
    frozen_at: str | None = None,
    **env: str,
) -> subprocess.CompletedProcess[str]:
    """``yibao-sidecar demo`` with the host time zone ``tz``; with ``frozen_at``, every process
    of it (demo, simulator, sidecar, yibao-hsm) starts its clock there (libfaketime)."""
    command = [sys.executable, "-m", "sidecar", "demo", "--workdir", str(workdir)]
    if frozen_at is not None:
        faketime = shutil.which("faketime")
        if faketime is None:
            pytest.fail("faketime is required (Debian package faketime, scripts/bootstrap.sh)")
        command = [faketime, frozen_at, *command]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "TZ": tz,
            "YIBAO_PKCS11_MODULE": str(softhsm_lib),
            "YIBAO_SIDECAR__LOG__LEVEL": "DEBUG",
            "PYTHONUNBUFFERED": "1",
            **env,
        },
        cwd=REPO,
        timeout=110,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("tz", "frozen_at"),
    [
        ("America/Los_Angeles", None),
        ("Pacific/Kiritimati", None),
        ("America/Los_Angeles", IN_THE_WINDOW),
    ],
    ids=["los-angeles", "kiritimati", "los-angeles-17:30Z"],
)
def test_no_log_line_of_the_demo_names_anyone(
    softhsm_lib: Path, tmp_path: Path, tz: str, frozen_at: str | None
) -> None:
    workdir = tmp_path / "demo"
    demo = run_demo(workdir, softhsm_lib, tz=tz, frozen_at=frozen_at)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    if frozen_at is not None:  # the clock was really frozen, and the dates are Beijing's
        assert "registers for 440305 (深圳南山) 2026-12-06 to 2027-06-04" in demo.stdout
    outputs = {
        "demo stdout (transcript)": demo.stdout,
        "demo stderr": demo.stderr,
        "sidecar.log": (workdir / "sidecar.log").read_text(),
        "simulator.log": (workdir / "simulator.log").read_text(),
    }
    assert '"event": "rpc"' in outputs["sidecar.log"]  # the log we scan is the real one
    assert '"level": "debug"' in outputs["sidecar.log"]  # and at DEBUG
    assert '"logger": "aiosqlite"' not in outputs["sidecar.log"]  # it would print SQL parameters

    population = Population.generate(SEED)
    shown = population.examples()
    leaks = []
    for person in population.people:
        for value in identifiers(person):
            for where, text in outputs.items():
                if value in text:
                    leaks.append(f"{where}: {kind_of(person, value)} of a person")
    # The demo's own requests carry phone numbers (a registration's contact phone): none logged.
    demo_source = Path(demo_module.__file__).read_text()
    for phone in set(re.findall(r"(?<![0-9])1[3-9][0-9]{9}(?![0-9])", demo_source)):
        leaks += [f"{where}: a phone of the demo" for where, t in outputs.items() if phone in t]
    assert not leaks, leaks
    # The transcript does show the example people, masked: the scan looked at the right text.
    assert shown.employee.certno[:6] + "********" + shown.employee.certno[-4:] in demo.stdout
    assert shown.employee.psn_name[0] + "*" in demo.stdout


@pytest.mark.slow
def test_a_failing_step_ends_the_demo_in_one_line(softhsm_lib: Path, tmp_path: Path) -> None:
    # A regional transaction code the platform does not know: its registration step is refused.
    demo = run_demo(
        tmp_path / "demo",
        softhsm_lib,
        tz="UTC",
        YIBAO_SIDECAR__PLATFORM__TRANSACTIONS__REGISTRATION="2501B",
    )
    assert demo.returncode == 1
    assert demo.stderr.splitlines() == [
        "demo: SubmitOffsiteRegistration failed: FAILED_PRECONDITION PLATFORM_REFUSED "
        "(the insurance platform refused the request (infcode -1))"
    ]
    assert "Traceback" not in demo.stdout + demo.stderr
    assert "sidecar stopped on SIGTERM (exit code 0)" in demo.stdout  # nothing left running
    assert "simulator stopped on SIGTERM (exit code 0)" in demo.stdout

"""The whole demo, run as `make demo` runs it, leaves no personal data in any log line.

Every process's output is captured: the demo's own stdout (the transcript) and stderr, the
sidecar's JSON log and the simulator's log. The sidecar runs at DEBUG, so even debug lines are
searched. Each is scanned for the synthetic population's identifiers: resident ID numbers,
names, platform person numbers, and phone numbers and e-voucher tokens where the population has
them, and the phone numbers the demo's requests carry. The transcript shows masked forms by
design (``110105********1234``, ``张**``).

Spans: the demo exports none (no exporter is configured in it); the in-memory span scan lives
with the telemetry tests.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from sidecar.demo import SEED
from sidecar.simulator.population import Person, Population
from tests.conftest import REPO

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


def test_no_log_line_of_the_demo_names_anyone(softhsm_lib: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    env = {
        **os.environ,
        "YIBAO_PKCS11_MODULE": str(softhsm_lib),
        "YIBAO_SIDECAR__LOG__LEVEL": "DEBUG",
        "PYTHONUNBUFFERED": "1",
    }
    demo = subprocess.run(
        [sys.executable, "-m", "sidecar", "demo", "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=110,
    )
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
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
    demo_source = (REPO / "sidecar" / "demo.py").read_text()
    for phone in set(re.findall(r"(?<![0-9])1[3-9][0-9]{9}(?![0-9])", demo_source)):
        leaks += [f"{where}: a phone of the demo" for where, t in outputs.items() if phone in t]
    assert not leaks, leaks
    # The transcript does show the example people, masked: the scan looked at the right text.
    assert shown.employee.certno[:6] + "********" + shown.employee.certno[-4:] in demo.stdout
    assert shown.employee.psn_name[0] + "*" in demo.stdout

"""Version guards around the private-API uses: only tested library versions get that far."""

from __future__ import annotations

from enum import IntEnum
from importlib.metadata import version

import pytest

from hsm import mechanisms, versions
from hsm.errors import ConfigError


@pytest.mark.parametrize(
    ("distribution", "installed"),
    [("python-pkcs11", "0.10.0"), ("python-pkcs11", "0.10.9"), ("tongsuopy", "1.0.1"),
     ("tongsuopy", "1.0.9.post1")],
)  # fmt: skip
def test_versions_inside_the_tested_range_pass(distribution: str, installed: str) -> None:
    versions.check(distribution, installed)


@pytest.mark.parametrize(
    ("distribution", "installed", "expected"),
    [
        ("python-pkcs11", "0.11.0", ">=0.10,<0.11 (hsm/mechanisms.py"),
        ("python-pkcs11", "0.9.3", ">=0.10,<0.11"),
        ("tongsuopy", "1.1.0", ">=1.0.1,<1.1 (hsm/sm/backend.py"),
        ("tongsuopy", "1.0.0", ">=1.0.1,<1.1"),
        ("tongsuopy", "garbage", ">=1.0.1,<1.1"),
    ],
)
def test_a_version_outside_the_range_is_one_line_naming_it_and_why(
    distribution: str, installed: str, expected: str
) -> None:
    with pytest.raises(versions.UntestedVersion) as caught:
        versions.check(distribution, installed)
    message = str(caught.value)
    assert message.startswith(f"{distribution} {installed} is outside the tested range {expected}")
    assert "\n" not in message and "constraints.txt" in message
    assert isinstance(caught.value, ConfigError)  # yibao-hsm: exit code 2


def test_the_installed_libraries_are_the_tested_ones() -> None:
    versions.check_all()
    assert version("python-pkcs11")  # the guard really looks at something installed


def test_enum_extension_refuses_an_untested_python_pkcs11(monkeypatch: pytest.MonkeyPatch) -> None:
    class Probe(IntEnum):
        KNOWN = 1

    monkeypatch.setattr(versions, "version", lambda name: "0.11.0")
    with pytest.raises(versions.UntestedVersion, match=r"python-pkcs11 0\.11\.0"):
        mechanisms.extend_int_enum(Probe, "VENDOR_X", 0x80000001)
    assert "VENDOR_X" not in Probe.__members__  # refused before the enum was touched

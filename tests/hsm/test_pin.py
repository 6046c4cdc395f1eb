"""PIN files: type and mode policy, newline handling, and the PIN staying secret."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hsm.errors import ConfigError, PolicyError
from hsm.pin import Pin, read_pin_file
from tests.hsm_fixtures import write_secret


def test_reads_and_strips_exactly_one_newline(tmp_path: Path) -> None:
    assert read_pin_file(write_secret(tmp_path / "a", "12 34")).reveal() == "12 34"
    p = tmp_path / "b"
    p.write_bytes(b"abcd\n\n")
    p.chmod(0o600)
    with pytest.raises(ConfigError, match="more than one line"):
        read_pin_file(p)
    p.write_bytes(b"abcd\r\n")
    assert read_pin_file(p).reveal() == "abcd"
    p.write_bytes(b"abcd")
    assert read_pin_file(p).reveal() == "abcd"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o606])
def test_group_or_world_access_is_refused(tmp_path: Path, mode: int) -> None:
    p = write_secret(tmp_path / "pin", "topsecret-1", mode)
    with pytest.raises(PolicyError) as exc:
        read_pin_file(p)
    assert str(p) in str(exc.value) and f"{mode:04o}" in str(exc.value)
    assert "topsecret-1" not in str(exc.value)


def test_not_a_regular_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="not a regular file"):
        read_pin_file(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(PolicyError, match="not a regular file"):
        read_pin_file(fifo)
    with pytest.raises(ConfigError, match="does not exist"):
        read_pin_file(tmp_path / "missing")


def test_symlink_to_a_private_file_is_accepted(tmp_path: Path) -> None:
    target = write_secret(tmp_path / "target", "linked-pin")
    link = tmp_path / "link"
    link.symlink_to(target)
    assert read_pin_file(link).reveal() == "linked-pin"


def test_empty_pin_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="empty"):
        read_pin_file(write_secret(tmp_path / "e", ""))


def test_pin_never_prints_itself() -> None:
    pin = Pin("s3cr3t-value", source="/run/secrets/pin")
    for text in (repr(pin), str(pin), f"{pin}", f"{pin!r}"):
        assert "s3cr3t-value" not in text
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(pin)

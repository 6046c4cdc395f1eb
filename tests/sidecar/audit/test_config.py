"""``[audit]``: two years of retention at least, and the HSM it keeps its keys in."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar import config
from sidecar.config import ConfigError
from tests.sidecar.test_config import MINIMAL, write

HSM = """
[hsm]
module = "/usr/lib/vendor/libpkcs11.so"
token_label = "yibao"
user_pin_file = "/run/secrets/yibao/user.pin"
"""


def test_audit_defaults(tmp_path: Path) -> None:
    settings = config.load(write(tmp_path, MINIMAL + HSM + "[audit]\n"), environ={})
    assert settings.audit is not None
    assert settings.audit.retention_days == 730
    assert settings.audit.chain_id is None  # one chain per process start
    assert settings.audit.checkpoint_every_records == 1000


@pytest.mark.parametrize("value", ["0", "-5", "1000001", '"many"'])
def test_checkpoint_every_records_is_validated(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, MINIMAL + HSM + f"[audit]\ncheckpoint_every_records = {value}\n")
    with pytest.raises(ConfigError, match=r"audit\.checkpoint_every_records"):
        config.load(path, environ={})


def test_retention_below_two_years_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + HSM + "[audit]\nretention_days = 729\n")
    with pytest.raises(ConfigError, match=r"audit\.retention_days .*greater than or equal to 730"):
        config.load(path, environ={})
    env = {"YIBAO_SIDECAR__AUDIT__RETENTION_DAYS": "365"}
    with pytest.raises(ConfigError, match="environment YIBAO_SIDECAR__AUDIT__RETENTION_DAYS"):
        config.load(write(tmp_path, MINIMAL + HSM + "[audit]\n"), environ=env)


def test_the_trail_needs_the_hsm(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"keeps its keys in the HSM: configure \[hsm\]"):
        config.load(write(tmp_path, MINIMAL + "[audit]\n"), environ={})

"""Configuration of caller access: the TCP listener's mutual TLS and the ``[access]`` section."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar import config
from sidecar.config import ConfigError
from tests.sidecar.test_config import MINIMAL, write

TLS = """
[server.tls]
cert_file = "/etc/yibao/server.pem"
key_file = "/etc/yibao/server-key.pem"
client_ca_file = "/etc/yibao/callers-ca.pem"
"""


def test_tcp_with_mutual_tls_may_listen_beyond_loopback(tmp_path: Path) -> None:
    text = MINIMAL + TLS
    settings = config.load(
        write(tmp_path, text), environ={"YIBAO_SIDECAR__SERVER__TCP_LISTEN": "0.0.0.0:50051"}
    )
    assert settings.server.tcp_listen == "0.0.0.0:50051"
    assert settings.server.tls is not None
    assert settings.server.tls.client_ca_file == Path("/etc/yibao/callers-ca.pem")


@pytest.mark.parametrize(
    ("extra", "environ", "expected"),
    [
        (
            "",
            {"YIBAO_SIDECAR__SERVER__TCP_LISTEN": "127.0.0.1:50051"},
            "config: server.tcp_listen (from environment YIBAO_SIDECAR__SERVER__TCP_LISTEN): "
            "Value error, TCP needs mutual TLS: configure [server.tls], or set "
            "server.tcp_plaintext_for_development = true (development only)",
        ),
        (
            TLS,
            {"YIBAO_SIDECAR__SERVER__TCP_LISTEN": ":50051"},
            "config: server.tcp_listen (from environment YIBAO_SIDECAR__SERVER__TCP_LISTEN): "
            "Value error, must be HOST:PORT",
        ),
        (
            "[server.tls]\ncert_file = 'a.pem'\n",
            {},
            "config: server.tls.key_file (from {path}): required key is missing (and 1 more)",
        ),
        (
            "[access]\nreload_interval_seconds = 1\n",
            {},
            "config: access.policy_file (from {path}): required key is missing",
        ),
    ],
)
def test_bad_access_settings_name_the_key(
    tmp_path: Path, extra: str, environ: dict[str, str], expected: str
) -> None:
    path = write(tmp_path, MINIMAL + extra)
    with pytest.raises(ConfigError) as caught:
        config.load(path, environ=environ)
    assert str(caught.value) == expected.format(path=path)


def test_the_access_section(tmp_path: Path) -> None:
    settings = config.load(
        write(tmp_path, MINIMAL + '[access]\npolicy_file = "/etc/yibao/access.toml"\n'),
        environ={"YIBAO_SIDECAR__ACCESS__RELOAD_INTERVAL_SECONDS": "0.5"},
    )
    assert settings.access is not None
    assert settings.access.policy_file == Path("/etc/yibao/access.toml")
    assert settings.access.reload_interval_seconds == 0.5
    assert config.load(write(tmp_path, MINIMAL), environ={}).access is None

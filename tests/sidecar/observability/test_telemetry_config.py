"""``[telemetry]``: exporters off by default, credentials only from files, one-line errors."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from sidecar import config
from sidecar.config import ConfigError, TelemetryConfig
from sidecar.observability import telemetry_export
from tests.conftest import write_secret
from tests.sidecar.test_config import MINIMAL, write


def test_no_exporter_unless_configured(tmp_path: Path) -> None:
    settings = config.load(write(tmp_path, MINIMAL), environ={})
    assert settings.telemetry.otlp.endpoint is None
    assert settings.telemetry.prometheus.listen is None
    built = telemetry_export.build(settings.telemetry)
    try:
        assert built.scrape_address is None
    finally:
        built.shutdown()


def test_the_environment_turns_exporters_on(tmp_path: Path) -> None:
    environ = {
        "YIBAO_SIDECAR__TELEMETRY__OTLP__ENDPOINT": "http://collector:4317",
        "YIBAO_SIDECAR__TELEMETRY__OTLP__PROTOCOL": "grpc",
        "YIBAO_SIDECAR__TELEMETRY__PROMETHEUS__LISTEN": "0.0.0.0:9464",
        "YIBAO_SIDECAR__TELEMETRY__TRACE_SAMPLE_RATIO": "0.25",
    }
    settings = config.load(write(tmp_path, MINIMAL), environ=environ)
    assert settings.telemetry.otlp.endpoint == "http://collector:4317"
    assert settings.telemetry.otlp.protocol == "grpc"
    assert settings.telemetry.prometheus.listen == "0.0.0.0:9464"
    assert settings.telemetry.trace_sample_ratio == 0.25


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            '[telemetry.otlp]\nheaders = { Authorization = "Bearer abc" }',
            "telemetry.otlp.headers (from {path}): Value error, header Authorization looks like "
            "a credential: put it in headers_file",
        ),
        (
            '[telemetry.otlp]\nendpoint = "collector:4318"',
            "telemetry.otlp.endpoint (from {path}): String should match pattern '^https?://'",
        ),
        (
            '[telemetry.otlp]\nprotocol = "http/json"',
            "telemetry.otlp.protocol (from {path}): Input should be 'http/protobuf' or 'grpc'",
        ),
        (
            '[telemetry.prometheus]\nlisten = "9464"',
            "telemetry.prometheus.listen (from {path}): Value error, must be HOST:PORT",
        ),
        (
            "[telemetry]\ntrace_sample_ratio = 2",
            "telemetry.trace_sample_ratio (from {path}): Input should be less than or equal to 1",
        ),
    ],
)
def test_bad_telemetry_settings_name_the_key(tmp_path: Path, section: str, message: str) -> None:
    path = write(tmp_path, MINIMAL + "\n" + section + "\n")
    with pytest.raises(ConfigError) as caught:
        config.load(path, environ={})
    assert str(caught.value) == "config: " + message.format(path=path)
    assert "Bearer abc" not in str(caught.value)


def test_a_malformed_headers_file_is_named_without_its_content(tmp_path: Path) -> None:
    headers = write_secret(tmp_path / "otlp.headers", "authorization=Bearer ok\nBearer leaked")
    otlp = {"endpoint": "http://127.0.0.1:4318", "headers_file": str(headers)}
    with pytest.raises(ConfigError) as caught:
        telemetry_export.build(TelemetryConfig.model_validate({"otlp": otlp}))
    assert str(caught.value) == (
        f"config: telemetry.otlp.headers_file: {headers} line 2 is not name=value"
    )
    missing = {**otlp, "headers_file": str(tmp_path / "absent")}
    with pytest.raises(ConfigError, match=r"^config: telemetry.otlp.headers_file: cannot read"):
        telemetry_export.build(TelemetryConfig.model_validate({"otlp": missing}))


def test_a_scrape_address_in_use_is_a_config_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(ConfigError) as caught:
            telemetry_export.build(
                TelemetryConfig.model_validate({"prometheus": {"listen": listen}})
            )
    assert str(caught.value) == (
        f"config: telemetry.prometheus.listen: cannot listen on {listen}: Address already in use"
    )

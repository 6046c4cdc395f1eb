"""The ``simulate`` command: prints where to connect, serves, and stops cleanly on a signal."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.devkit.simulator.support import client_context, envelope_factory, sign_in_input


def test_simulate_command_serves_until_sigterm(tmp_path: Path) -> None:
    pki_dir = tmp_path / "pki"
    process = subprocess.Popen(
        [sys.executable, "-m", "yibao_devkit.simulator", "--listen", "127.0.0.1:0",
         "--seed", "7", "--pki-dir", str(pki_dir), "--population-size", "20"],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        lines = dict(process.stdout.readline().rstrip("\n").split(": ", 1) for _ in range(4))
        assert lines["url"].startswith("https://127.0.0.1:")
        assert lines["url"].endswith("/fsi/api/rsfComIfsService/callService")
        assert lines["ca_cert"] == str(pki_dir / "ca.pem")
        assert lines["client_cert"] == str(pki_dir / "client.pem")
        assert lines["client_key"] == str(pki_dir / "client-key.pem")
        context = client_context(
            trust=Path(lines["ca_cert"]),
            cert=Path(lines["client_cert"]),
            key=Path(lines["client_key"]),
        )
        with httpx.Client(http2=True, verify=context, timeout=10) as http:
            response = http.post(lines["url"], json=envelope_factory()("9001", sign_in_input()))
        assert response.json()["infcode"] == 0
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0


def test_bad_listen_address_is_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "yibao_devkit.simulator", "--listen", "nowhere", "--pki-dir",
         str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--listen" in result.stderr


def test_faults_and_switches_from_the_command_line(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "yibao_devkit.simulator", "--listen", "127.0.0.1:0",
         "--pki-dir", str(tmp_path / "pki"), "--population-size", "20",
         "--fault", "9001:http-5xx=502:1", "--fault", "1101:refuse=维护中",
         "--alias", "2501A=2501", "--second-confirmation", "sms_code"],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        lines = dict(process.stdout.readline().rstrip("\n").split(": ", 1) for _ in range(4))
        context = client_context(
            trust=Path(lines["ca_cert"]),
            cert=Path(lines["client_cert"]),
            key=Path(lines["client_key"]),
        )
        build = envelope_factory()
        with httpx.Client(http2=True, verify=context, timeout=10) as http:
            first = http.post(lines["url"], json=build("9001", sign_in_input()))
            second = http.post(lines["url"], json=build("9001", sign_in_input()))
            sign_no = second.json()["output"]["signinoutb"]["sign_no"]
            lookup = http.post(lines["url"], json=build("1101", {"data": {}}, sign_no))
            alias = http.post(lines["url"], json=build("2501A", {}, sign_no))
        assert first.status_code == 502
        assert second.json()["infcode"] == 0
        assert lookup.json()["err_msg"] == "维护中"
        assert alias.json()["err_msg"] == "参数[refmedin]不能为空"  # known code, checked input
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0


def test_bad_fault_is_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "yibao_devkit.simulator", "--listen", "127.0.0.1:0", "--pki-dir",
         str(tmp_path), "--fault", "2207:explode"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "explode" in result.stderr

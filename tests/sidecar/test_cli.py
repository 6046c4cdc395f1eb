"""`yibao-sidecar`'s commands: `serve` is the runtime's own; `simulate` and `demo` come from the dev
kit through the `yibao_sidecar.commands` entry points, and without it they fail in one line."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import EntryPoint, version
from pathlib import Path

import pytest

from sidecar import cli


def test_the_dev_kit_registers_simulate_and_demo() -> None:
    plugins = cli._plugins()
    assert plugins["simulate"].value == "yibao_devkit.simulator.cli:main"
    assert plugins["demo"].value == "yibao_devkit.demo:main"


@pytest.mark.parametrize("command", ["simulate", "demo"])
def test_without_the_dev_kit_its_commands_name_it_and_exit_2(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "entry_points", lambda group: [])
    assert cli.main([command, "--seed", "1"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"'{command}'" in err and "yibao-devkit" in err and "not installed" in err


def test_without_the_dev_kit_serve_still_parses(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "entry_points", lambda group: [])
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["serve"])  # --config missing: argparse's usage error
    assert exit_info.value.code == cli.EXIT_USAGE
    assert "--config" in capsys.readouterr().err


def test_a_plugin_command_gets_its_own_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    def fake_main(argv: list[str]) -> int:
        seen.append(argv)
        return 7

    entry = EntryPoint("simulate", "fake:main", cli.COMMANDS_GROUP)
    monkeypatch.setattr(cli, "entry_points", lambda group: [entry])
    monkeypatch.setattr(EntryPoint, "load", lambda self: fake_main)
    assert cli.main(["simulate", "--listen", "127.0.0.1:0", "--help"]) == 7
    assert seen == [["--listen", "127.0.0.1:0", "--help"]]


def test_an_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["frobnicate"])
    assert exit_info.value.code == cli.EXIT_USAGE
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["yibao-sidecar", "yibao-hsm", "yibao-audit"])
def test_every_command_prints_the_distributions_version(command: str) -> None:
    installed = Path(sys.executable).parent / command  # the console script pip made
    proc = subprocess.run(
        [str(installed), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout == f"{command} {version('yibao-sidecar')}\n"


def test_keygen_version_still_names_the_key_version() -> None:
    from hsm.cli import build_parser

    args = build_parser().parse_args(["keygen", "--purpose", "sign", "--version", "2026-11"])
    assert args.version == "2026-11"


def test_serve_refuses_an_untested_library_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from hsm import versions
    from tests.sidecar.test_config import MINIMAL

    config = tmp_path / "sidecar.toml"
    config.write_text(MINIMAL, encoding="utf-8")
    real = versions.version
    monkeypatch.setattr(
        versions, "version", lambda n: "0.11.0" if n == "python-pkcs11" else real(n)
    )
    assert cli.main(["serve", "--config", str(config)]) == cli.EXIT_FAILED
    assert capsys.readouterr().err == (
        "yibao-sidecar: cannot start: python-pkcs11 0.11.0 is outside the tested range "
        ">=0.10,<0.11 (hsm/mechanisms.py adds vendor numbers to its Mechanism/KeyType enums); "
        "install the version constraints.txt pins\n"
    )

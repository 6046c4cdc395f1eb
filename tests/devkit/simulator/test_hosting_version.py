"""The simulator's hosting uses Hypercorn internals: an untested Hypercorn is one line."""

from __future__ import annotations

from importlib.metadata import EntryPoint, version

import pytest

from sidecar import cli
from yibao_devkit.simulator import hosting


def test_the_installed_hypercorn_is_a_tested_one() -> None:
    hosting.check_hypercorn(version("hypercorn"))


@pytest.mark.parametrize("installed", ["0.19.0", "0.16.9", "1.0"])
def test_an_untested_hypercorn_is_refused(installed: str) -> None:
    with pytest.raises(hosting.UntestedHypercorn, match=rf"^hypercorn {installed} is outside"):
        hosting.check_hypercorn(installed)


def test_yibao_sidecar_simulate_reports_it_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def load(self: EntryPoint) -> object:
        hosting.check_hypercorn("0.19.0")
        raise AssertionError("unreachable")

    entry = EntryPoint("simulate", "yibao_devkit.simulator.cli:main", cli.COMMANDS_GROUP)
    monkeypatch.setattr(cli, "entry_points", lambda group: [entry])
    monkeypatch.setattr(EntryPoint, "load", load)
    assert cli.main(["simulate"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("yibao-sidecar: cannot load 'simulate' (yibao_devkit.simulator.cli:main)")
    assert "hypercorn 0.19.0 is outside the tested range" in err

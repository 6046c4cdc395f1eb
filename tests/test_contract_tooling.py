"""The contract's tooling: buf lint passes, and the committed stubs match proto/."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
BUF = ROOT / "node_modules" / ".bin" / "buf"


def gen_protos() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_buf_lint_and_format_pass() -> None:
    assert BUF.exists(), "buf is missing: run scripts/bootstrap.sh"
    for command in (["lint"], ["format", "--diff", "--exit-code"]):
        result = subprocess.run([str(BUF), *command], cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def test_buf_lint_catches_a_contract_mistake(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "proto", tmp_path / "proto")
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    common = tmp_path / "proto" / "yibao" / "gateway" / "v1" / "common.proto"
    common.write_text(common.read_text() + "\nenum badEnum { ZERO = 0; }\n")
    result = subprocess.run([str(BUF), "lint"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode != 0
    assert "badEnum" in result.stdout


def test_committed_stubs_match_the_protos() -> None:
    assert gen_protos().drift() == []


def test_drift_is_detected(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "proto", tmp_path / "proto")
    gateway = tmp_path / "proto" / "yibao" / "gateway" / "v1" / "gateway.proto"
    gateway.write_text(
        gateway.read_text().replace(
            "message GetEnrollmentRequest {",
            "message GetEnrollmentRequest {\n  string extra = 99;",
            1,
        )
    )
    changed = gen_protos().drift(tmp_path / "proto")
    # both copies: the sidecar's and the client kit's (clients/python)
    for stubs in ("sidecar/_proto", "clients/python/yibao_client/_proto"):
        assert f"{stubs}/yibao/gateway/v1/gateway_pb2.py" in changed
        assert f"{stubs}/yibao/gateway/v1/gateway_pb2.pyi" in changed

"""The client kit stands alone: it imports only gRPC, protobuf, google.rpc and the standard
library (never the sidecar, the dev kit or test code), and declares exactly those dependencies."""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

KIT = Path(__file__).resolve().parents[2] / "clients" / "python"
ALLOWED = ("grpc", "google.protobuf", "google.rpc", "yibao_client")


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_the_kit_imports_only_grpc_protobuf_and_the_standard_library() -> None:
    sources = [p for p in (KIT / "yibao_client").rglob("*.py") if "_proto" not in p.parts]
    sources += list((KIT / "examples").glob("*.py"))
    assert sources
    for source in sources:
        for name in imported(source):
            top = name.split(".")[0]
            allowed = top in sys.stdlib_module_names or top in {"_args", "__future__"}
            allowed = allowed or any(name == a or name.startswith(a + ".") for a in ALLOWED)
            assert allowed, f"{source.relative_to(KIT)} imports {name}"


def test_the_kit_declares_only_its_three_dependencies() -> None:
    project = tomllib.loads((KIT / "pyproject.toml").read_text())["project"]
    names = {d.split(">")[0].split("=")[0].split("<")[0].strip() for d in project["dependencies"]}
    assert names == {"grpcio", "protobuf", "googleapis-common-protos"}

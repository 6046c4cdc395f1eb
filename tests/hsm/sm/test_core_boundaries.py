"""The SM crypto core's boundaries, read from the source (AST), so a shortcut cannot creep in:

* ``hsm`` never imports ``sidecar``, and the core (``hsm/sm/``) imports nothing of ``hsm`` but
  ``hsm.errors`` and itself (no PKCS#11, no token), so any layer can use it without an HSM;
* outside ``hsm/sm/backend.py`` no product module picks native SM code itself: no import of
  tongsuopy or gmssl, no ``hashes.SM3`` / ``algorithms.SM4`` of pyca. The platform simulator
  and the demo (the dev kit) keep their own crypto on purpose and are not product modules.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DEV_KIT = ("simulator", "demo")  # path parts / file-name prefixes of the dev kit
NATIVE = ("tongsuopy", "gmssl")
PRIMITIVES = {("hashes", "SM3"), ("algorithms", "SM4")}


def modules(package: str) -> Iterator[Path]:
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT)
        if any(part.startswith(DEV_KIT) for part in rel.parts) or "_proto" in rel.parts:
            continue
        yield path


def imported(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module


def test_hsm_never_imports_sidecar() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in modules("hsm")
        for name in imported(ast.parse(path.read_text("utf-8")))
        if name == "sidecar" or name.startswith("sidecar.")
    ]
    assert offenders == []


def test_the_core_needs_no_token() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in (ROOT / "hsm" / "sm").glob("*.py")
        for name in imported(ast.parse(path.read_text("utf-8")))
        if name.split(".")[0] in {"hsm", "pkcs11", "sidecar"}
        and name not in {"hsm.errors", "hsm.sm"}
        and not name.startswith("hsm.sm.")
    ]
    assert offenders == []


def test_only_the_backend_picks_native_sm_code() -> None:
    backend = ROOT / "hsm" / "sm" / "backend.py"
    offenders = []
    for path in [*modules("hsm"), *modules("sidecar")]:
        if path == backend:
            continue
        tree = ast.parse(path.read_text("utf-8"))
        names = [name for name in imported(tree) if name.split(".")[0] in NATIVE]
        uses = [
            f"{node.value.id}.{node.attr}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and (node.value.id, node.attr) in PRIMITIVES
        ]
        if names or uses:
            offenders.append(f"{path.relative_to(ROOT)}: {names + uses}")
    assert offenders == []


def test_the_checks_see_the_code() -> None:
    # A check that reads nothing cannot fail: make sure the walk finds the modules it guards.
    found = {path.relative_to(ROOT).as_posix() for path in [*modules("hsm"), *modules("sidecar")]}
    assert {"hsm/sm/backend.py", "hsm/sm2.py", "sidecar/platform/security/scheme_a.py"} <= found
    assert not any("simulator" in name for name in found)

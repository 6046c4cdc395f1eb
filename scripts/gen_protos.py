"""Generate the Python stubs of sidecar/_proto and of the client kit from proto/ (never edit them).

    python scripts/gen_protos.py           # regenerate
    python scripts/gen_protos.py --check   # exit 1 if the committed stubs drifted from proto/

Two copies, one generator: the sidecar's own (``sidecar/_proto``) and the IM client kit's
(``clients/python/yibao_client/_proto``, distribution ``yibao-sidecar-client``), which must not
depend on the runtime. protoc writes absolute imports named after the proto package
(``from yibao.gateway.v1 import``); each copy lives inside its package, so those imports are
rewritten to ``<package>._proto.yibao.gateway.v1``. That rewrite is the only change made to
protoc's output.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
OUTPUT = ROOT / "sidecar" / "_proto"
PACKAGE_PREFIX = "sidecar._proto."
CLIENT_OUTPUT = ROOT / "clients" / "python" / "yibao_client" / "_proto"
# Every generated copy: (directory, the package its imports are rewritten to).
TARGETS = ((OUTPUT, PACKAGE_PREFIX), (CLIENT_OUTPUT, "yibao_client._proto."))
_IMPORT = re.compile(r"^(from|import) (yibao\.)", re.MULTILINE)
_HEADER = '"""Generated from proto/ by scripts/gen_protos.py. Do not edit."""\n'


def generate(
    destination: Path, proto_root: Path = PROTO_ROOT, package_prefix: str = PACKAGE_PREFIX
) -> None:
    protos = sorted(str(p.relative_to(proto_root)) for p in proto_root.rglob("*.proto"))
    bin_dir = Path(sys.executable).parent
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"--proto_path={proto_root}",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={destination}",
        f"--grpc_python_out={destination}",
        f"--mypy_out={destination}",
        f"--mypy_grpc_out={destination}",
        *protos,
    ]
    subprocess.run(command, check=True, cwd=proto_root, stdout=subprocess.DEVNULL)  # noqa: S603
    for path in destination.rglob("*.py*"):
        text = path.read_text()
        path.write_text(_IMPORT.sub(lambda m: f"{m[1]} {package_prefix}{m[2]}", text))
    for directory in [destination, *(p for p in destination.rglob("*") if p.is_dir())]:
        (directory / "__init__.py").write_text(_HEADER)


def drift(
    proto_root: Path = PROTO_ROOT, targets: tuple[tuple[Path, str], ...] = TARGETS
) -> list[str]:
    """The stub files (paths from the repository root) that differ from what ``proto_root``
    generates, in every copy (empty: no drift)."""
    changed: list[str] = []
    for stubs, prefix in targets:
        where = _shown(stubs)
        if not stubs.exists():
            changed.append(f"({where} missing)")
            continue
        with tempfile.TemporaryDirectory() as scratch:
            generate(Path(scratch), proto_root, prefix)
            changed += [f"{where}/{name}" for name in _differences(Path(scratch), stubs)]
    return changed


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _differences(left: Path, right: Path) -> list[str]:
    names = {p.relative_to(left) for p in left.rglob("*") if p.is_file()}
    names |= {p.relative_to(right) for p in right.rglob("*") if p.is_file()}
    names = {n for n in names if "__pycache__" not in n.parts}
    return sorted(
        str(n)
        for n in names
        if not (left / n).is_file()
        or not (right / n).is_file()
        or not filecmp.cmp(left / n, right / n, shallow=False)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the stubs drifted")
    args = parser.parse_args()
    if args.check:
        changed = drift()
        if changed:
            print("stubs drifted from proto/; run `make proto`: " + ", ".join(changed))
            return 1
        print("stubs match proto/")
        return 0
    for output, prefix in TARGETS:
        with tempfile.TemporaryDirectory() as scratch:
            fresh = Path(scratch)
            generate(fresh, PROTO_ROOT, prefix)
            if output.exists():
                shutil.rmtree(output)
            shutil.copytree(fresh, output)
            print(f"generated {len(list(output.rglob('*.py*')))} files in {_shown(output)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

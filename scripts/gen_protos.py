"""Generate the Python stubs in ``sidecar/_proto`` from ``proto/`` (never edit them by hand).

    python scripts/gen_protos.py           # regenerate
    python scripts/gen_protos.py --check   # exit 1 if the committed stubs drifted from proto/

protoc writes absolute imports named after the proto package (``from yibao.gateway.v1 import``);
the stubs live inside the ``sidecar`` package, so those imports are rewritten to
``sidecar._proto.yibao.gateway.v1``. That rewrite is the only change made to protoc's output.
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
_IMPORT = re.compile(r"^(from|import) (yibao\.)", re.MULTILINE)
_HEADER = '"""Generated from proto/ by scripts/gen_protos.py. Do not edit."""\n'


def generate(destination: Path, proto_root: Path = PROTO_ROOT) -> None:
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
        path.write_text(_IMPORT.sub(lambda m: f"{m[1]} {PACKAGE_PREFIX}{m[2]}", text))
    for directory in [destination, *(p for p in destination.rglob("*") if p.is_dir())]:
        (directory / "__init__.py").write_text(_HEADER)


def drift(proto_root: Path = PROTO_ROOT, stubs: Path = OUTPUT) -> list[str]:
    """The stub files that differ from what ``proto_root`` generates (empty: no drift)."""
    if not stubs.exists():
        return [f"({stubs.name} missing)"]
    with tempfile.TemporaryDirectory() as scratch:
        generate(Path(scratch), proto_root)
        return _differences(Path(scratch), stubs)


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
    with tempfile.TemporaryDirectory() as scratch:
        fresh = Path(scratch)
        generate(fresh)
        if OUTPUT.exists():
            shutil.rmtree(OUTPUT)
        shutil.copytree(fresh, OUTPUT)
        print(f"generated {len(list(OUTPUT.rglob('*.py*')))} files in {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

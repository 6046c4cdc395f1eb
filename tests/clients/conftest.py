"""The client kit against the real thing: the assembled sidecar on a Unix socket and the simulator.

The fixtures are tests/integration's (the sidecar in this process, the simulator over mTLS).
The kit's synchronous client runs in a worker thread so that the sidecar keeps its event loop.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from tests.integration.conftest import (  # noqa: F401 - fixtures
    _audit_trail_on,
    population,
    short_dir,
    sidecar,
    simulator,
    token,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "clients" / "python" / "examples"


def example(name: str) -> ModuleType:
    """One of clients/python/examples/ as a module (they import their neighbour ``_args``)."""
    if str(EXAMPLES) not in sys.path:
        sys.path.append(str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(f"kit_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

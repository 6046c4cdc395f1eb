"""``python -m sidecar.simulator``: the simulate command without the main CLI."""

from sidecar.simulator.cli import main

raise SystemExit(main())

"""``python -m yibao_devkit.simulator``: the simulate command without the main CLI."""

from yibao_devkit.simulator.cli import main

raise SystemExit(main())

"""yibao-devkit: what developing and demonstrating the sidecar needs, never what production runs.

Public API (what tests, benchmarks and integrators may import):

- :mod:`yibao_devkit.simulator` - the national platform's stand-in (``running_simulator`` ...);
  independent of the sidecar's code on purpose (its own crypto and validators).
- :mod:`yibao_devkit.devcerts` - a throwaway development PKI (``generate``, ``DevPki``).
- :mod:`yibao_devkit.demo` - ``yibao-sidecar demo`` (``main``, ``run``, ``SEED``).

The sidecar's CLI reaches ``simulate`` and ``demo`` through the entry-point group
``yibao_sidecar.commands``; ``sidecar/`` never imports this package.
"""

__all__ = ["demo", "devcerts", "simulator"]

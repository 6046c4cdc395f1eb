"""The ``simulate`` command line: ``yibao-sidecar simulate --listen HOST:PORT --seed N ...``.

``configure_parser`` and ``command`` let the main ``yibao-sidecar`` CLI mount this as a
sub-command; ``main`` runs it stand-alone (``python -m sidecar.simulator``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from sidecar.simulator import server

DEFAULT_PKI_DIR = Path.home() / ".cache" / "yibao-sidecar" / "dev-pki"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``simulate`` options to ``parser`` and make it run :func:`command`."""
    parser.add_argument("--listen", default="127.0.0.1:9443", help="HOST:PORT (port 0: any)")
    parser.add_argument("--seed", type=int, default=42, help="population seed")
    parser.add_argument(
        "--pki-dir",
        type=Path,
        default=DEFAULT_PKI_DIR,
        help="where the development certificates are created or reused",
    )
    parser.add_argument("--population-size", type=int, default=200)
    parser.set_defaults(handler=command)


def command(args: argparse.Namespace) -> int:
    """Run the simulator with parsed ``args``; the process exit status."""
    listen: str = args.listen
    seed: int = args.seed
    pki_dir: Path = args.pki_dir
    population_size: int = args.population_size
    return server.run(listen, seed, pki_dir, population_size)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="yibao-sidecar simulate",
        description="Serve the national medical-insurance platform simulator over mutual TLS.",
    )
    configure_parser(parser)
    return command(parser.parse_args(argv))

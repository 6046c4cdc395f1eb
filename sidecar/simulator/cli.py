"""The ``simulate`` command line: ``yibao-sidecar simulate --listen HOST:PORT --seed N ...``.

``configure_parser`` and ``command`` let the main ``yibao-sidecar`` CLI mount this as a
sub-command; ``main`` runs it stand-alone (``python -m sidecar.simulator``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from sidecar.simulator import server
from sidecar.simulator.faults import FaultKind

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
    add_fault_option(parser)
    parser.add_argument(
        "--alias",
        action="append",
        default=[],
        metavar="CODE=CANONICAL",
        help="answer a regional transaction code like another, e.g. 2501A=2501 (repeatable)",
    )
    parser.add_argument(
        "--second-confirmation",
        metavar="FIELD",
        help="make 2207 require a confirmation code in data[FIELD] (e.g. sms_code)",
    )
    parser.set_defaults(handler=command)


def add_fault_option(parser: argparse.ArgumentParser) -> None:
    """Add the repeatable ``--fault INFNO:KIND[=VALUE][:TIMES]`` option (into ``args.fault``)."""
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="INFNO:KIND[=VALUE][:TIMES]",
        help=(
            "inject a fault, e.g. 2207:commit-then-drop:1 or 1101:latency=0.5; kinds: "
            + ", ".join(kind.value for kind in FaultKind)
            + " (repeatable; INFNO * means every transaction)"
        ),
    )


def command(args: argparse.Namespace) -> int:
    """Run the simulator with parsed ``args``; the process exit status."""
    listen: str = args.listen
    seed: int = args.seed
    pki_dir: Path = args.pki_dir
    population_size: int = args.population_size
    faults: list[str] = args.fault
    aliases: list[str] = args.alias
    second_confirmation: str | None = args.second_confirmation
    return server.run(
        listen,
        seed,
        pki_dir,
        population_size,
        faults=faults,
        aliases=aliases,
        second_confirmation=second_confirmation,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="yibao-sidecar simulate",
        description="Serve the national medical-insurance platform simulator over mutual TLS.",
    )
    configure_parser(parser)
    return command(parser.parse_args(argv))

"""``yibao-sidecar``: serve the gateway, run the platform simulator, or run the demo.

Exit codes: 0 success; 1 the command failed while running; 2 bad usage or configuration (one
line on standard error naming the problem).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from sidecar.config import ConfigError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yibao-sidecar", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gRPC sidecar")
    serve.add_argument("--config", type=Path, required=True, help="TOML configuration file")

    simulate = commands.add_parser("simulate", help="run the platform simulator over mTLS")
    simulate.add_argument("--listen", default="127.0.0.1:9443", help="HOST:PORT (port 0: any)")
    simulate.add_argument("--seed", type=int, default=42, help="synthetic population seed")
    simulate.add_argument("--population", type=int, default=200, help="number of people")
    simulate.add_argument(
        "--pki-dir", type=Path, default=Path("dev-pki"), help="where development certificates go"
    )
    simulate.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="INFNO:KIND[=VALUE][:TIMES]",
        help="inject a platform fault, e.g. 2207:commit-then-drop:1 (repeatable)",
    )

    demo = commands.add_parser("demo", help="run simulator + sidecar + a scripted IM client")
    demo.add_argument("--workdir", type=Path, help="keep the demo's files here (default: temp)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            from sidecar import app

            try:
                return asyncio.run(app.serve(args.config))
            except app.StartupError as exc:
                print(exc, file=sys.stderr)
                return EXIT_FAILED
        if args.command == "simulate":
            from sidecar.simulator import server as simulator

            return simulator.run(
                args.listen, args.seed, args.pki_dir, args.population, faults=args.fault
            )
        from sidecar import demo

        return demo.run(args.workdir)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())

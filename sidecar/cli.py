"""``yibao-sidecar``: serve the gateway, run the platform simulator, or run the demo.

Exit codes: 0 success; 1 the command failed while running; 2 bad usage or configuration (one
line on standard error naming the problem).
"""

from __future__ import annotations

import argparse
import asyncio
import os
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

    # The simulator owns its options (security schemes, faults, aliases); see
    # `yibao-sidecar simulate --help`. Its modules load only when it runs.
    commands.add_parser("simulate", help="run the platform simulator over mTLS")

    demo = commands.add_parser("demo", help="run simulator + sidecar + a scripted IM client")
    demo.add_argument("--workdir", type=Path, help="keep the demo's files here (default: temp)")
    demo.add_argument(
        "--pkcs11-module",
        type=Path,
        default=os.environ.get("YIBAO_PKCS11_MODULE") or None,
        help="the patched SoftHSM library (default: $YIBAO_PKCS11_MODULE)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["simulate"]:
        from sidecar.simulator import cli as simulator

        return simulator.main(arguments[1:])
    args = _parser().parse_args(arguments)
    try:
        if args.command == "serve":
            from sidecar import app

            try:
                return asyncio.run(app.serve(args.config))
            except app.StartupError as exc:
                print(exc, file=sys.stderr)
                return EXIT_FAILED
        from sidecar import demo

        return demo.run(args.workdir, args.pkcs11_module)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())

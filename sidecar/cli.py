"""``yibao-sidecar``: serve the gateway; with the dev kit installed, also simulate and demo.

``serve`` is the runtime's own command. Other commands come from installed distributions through
the entry-point group ``yibao_sidecar.commands`` (name -> ``main(argv) -> int``): the dev kit
(``devkit/``, distribution ``yibao-devkit``) registers ``simulate`` and ``demo`` there, so nothing
in ``sidecar/`` imports it and the runtime image, which lacks it, names it when asked for them.

Exit codes: 0 success; 1 the command failed while running; 2 bad usage or configuration (one
line on standard error naming the problem).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import EntryPoint, PackageNotFoundError, entry_points, version
from pathlib import Path
from typing import cast

from sidecar.config import ConfigError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

COMMANDS_GROUP = "yibao_sidecar.commands"
# The dev kit's commands, named in the error when it is not installed.
DEVKIT_COMMANDS = {
    "simulate": "run the platform simulator over mTLS",
    "demo": "run simulator + sidecar + a scripted IM client",
}
DEVKIT_DISTRIBUTION = "yibao-devkit"


def _version() -> str:
    try:  # the distribution that installed this command
        return version("yibao-sidecar")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _plugins() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=COMMANDS_GROUP) if ep.name != "serve"}


def _parser(plugins: dict[str, EntryPoint]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yibao-sidecar", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gRPC sidecar")
    serve.add_argument("--config", type=Path, required=True, help="TOML configuration file")
    # `call` owns its options (sidecar/cli_call.py): `yibao-sidecar call --help`.
    commands.add_parser("call", help="call one RPC of a running sidecar (JSON)", add_help=False)
    for name in sorted(plugins.keys() | DEVKIT_COMMANDS.keys()):
        # Each plug-in command owns its options: `yibao-sidecar <command> --help`.
        if name not in plugins:
            help_text = f"{DEVKIT_COMMANDS[name]} (needs {DEVKIT_DISTRIBUTION})"
        else:
            help_text = DEVKIT_COMMANDS.get(name) or f"from {plugins[name].module}"
        commands.add_parser(name, help=help_text, add_help=False)
    return parser


def _run_plugin(name: str, entry: EntryPoint | None, argv: list[str]) -> int:
    if entry is None:
        print(
            f"yibao-sidecar: '{name}' is a command of the dev kit ({DEVKIT_DISTRIBUTION}), which "
            "is not installed here: pip install -e devkit (scripts/bootstrap.sh does)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        command = cast(Callable[[list[str]], int], entry.load())
    except ImportError as exc:  # e.g. a dependency outside its tested versions
        print(f"yibao-sidecar: cannot load '{name}' ({entry.value}): {exc}", file=sys.stderr)
        return EXIT_USAGE
    return command(argv)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["call"]:
        from sidecar.cli_call import main as call

        return call(arguments[1:])
    plugins = _plugins()
    if arguments[:1] and (arguments[0] in plugins or arguments[0] in DEVKIT_COMMANDS):
        try:
            return _run_plugin(arguments[0], plugins.get(arguments[0]), arguments[1:])
        except KeyboardInterrupt:
            return EXIT_FAILED
    args = _parser(plugins).parse_args(arguments)
    try:
        from sidecar import app

        try:
            return app.run(args.config)
        except app.StartupError as exc:
            print(exc, file=sys.stderr)
            return EXIT_FAILED
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())

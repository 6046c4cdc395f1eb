"""The ``simulate`` command line: ``yibao-sidecar simulate --listen HOST:PORT --seed N ...``.

``configure_parser`` and ``command`` let the main ``yibao-sidecar`` CLI mount this as a
sub-command; ``main`` runs it stand-alone (``python -m yibao_devkit.simulator``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from yibao_devkit.simulator import server
from yibao_devkit.simulator.crypto import DEFAULT_USER_ID, PrivateKey, PublicKey
from yibao_devkit.simulator.faults import FaultKind
from yibao_devkit.simulator.security import (
    MessageSecurity,
    PlainText,
    SchemeAPlatform,
    SchemeBPlatform,
)

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
    add_security_options(parser)
    parser.add_argument(
        "--issue-ec-token",
        action="append",
        default=[],
        metavar="RESIDENT_ID",
        help="print an e-voucher token for this enrolled person at start-up (repeatable; demos)",
    )
    parser.set_defaults(handler=command)


def add_security_options(parser: argparse.ArgumentParser) -> None:
    """``--security plain|a|b`` and the key material of schemes A and B."""
    group = parser.add_argument_group("message security (platform-protocol.md §5)")
    group.add_argument(
        "--security",
        choices=("plain", "a", "b"),
        default="plain",
        help="plain JSON, scheme A (envelope cainfo) or scheme B (mobile payment 2.0.1)",
    )
    group.add_argument(
        "--client-public-key",
        metavar="FILE",
        type=Path,
        help="the institution's SM2 public key: PEM, or hex/Base64 of 04||X||Y (a and b)",
    )
    group.add_argument(
        "--platform-key",
        metavar="FILE",
        type=Path,
        help="the platform's SM2 private key: PEM, or hex/Base64 of d (default: from --seed)",
    )
    group.add_argument(
        "--sm4-key-file", type=Path, help="scheme A: file holding the SM4 key, 32 hex digits"
    )
    group.add_argument("--app-id", help="scheme B: appId (16+ ASCII characters)")
    group.add_argument("--app-secret-file", type=Path, help="scheme B: file holding the appSecret")
    group.add_argument(
        "--user-id",
        default=DEFAULT_USER_ID.decode(),
        help="SM2 user ID of both signatures (default 1234567812345678)",
    )
    group.add_argument(
        "--user-id-from-app-secret",
        action="store_true",
        help="scheme B: use the appSecret as the SM2 user ID",
    )


def build_security(args: argparse.Namespace) -> MessageSecurity:
    """The message security ``args`` ask for; ValueError (CryptoError) names what is wrong."""
    scheme: str = args.security
    if scheme == "plain":
        return PlainText()
    if args.client_public_key is None:
        raise ValueError("--client-public-key is required with --security a or b")
    client = PublicKey.parse(Path(args.client_public_key).read_text(encoding="ascii"))
    platform = (
        PrivateKey.parse(Path(args.platform_key).read_text(encoding="ascii"))
        if args.platform_key is not None
        else PrivateKey.for_seed(args.seed)
    )
    user_id = str(args.user_id).encode("utf-8")
    if scheme == "a":
        if not args.sm4_key_file:
            raise ValueError("--sm4-key-file is required with --security a")
        try:
            sm4_key = bytes.fromhex(Path(args.sm4_key_file).read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            raise ValueError("--sm4-key-file: expected a file with 32 hex digits") from None
        return SchemeAPlatform(sm4_key, client, platform, user_id=user_id)
    if not args.app_id or not args.app_secret_file:
        raise ValueError("--app-id and --app-secret-file are required with --security b")
    try:
        app_secret = Path(args.app_secret_file).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        raise ValueError("--app-secret-file: cannot read the appSecret") from None
    return SchemeBPlatform(
        args.app_id,
        app_secret,
        client,
        platform,
        user_id=user_id,
        user_id_from_app_secret=bool(args.user_id_from_app_secret),
    )


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
    try:
        security = build_security(args)
    except (OSError, ValueError) as problem:  # CryptoError is a ValueError
        print(f"error: {problem}", file=sys.stderr)
        return 2
    return server.run(
        listen,
        seed,
        pki_dir,
        population_size,
        faults=faults,
        aliases=aliases,
        second_confirmation=second_confirmation,
        security=security,
        ec_tokens_for=list(args.issue_ec_token),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="yibao-sidecar simulate",
        description="Serve the national medical-insurance platform simulator over mutual TLS.",
    )
    configure_parser(parser)
    return command(parser.parse_args(argv))

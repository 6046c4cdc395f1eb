"""``yibao-audit``: verify, purge and export the audit trail.

    yibao-audit verify --config sidecar.toml --public-key audit.pem [--public-key old.pem]
                       [--open-chain CHAIN]... [--allow-open] [--expect-head SIG|FILE]...
                       [--data-keys] [--json] [--html report.html]
    yibao-audit purge  --config sidecar.toml --before 2024-01-01
    yibao-audit export --config sidecar.toml --subject 11010519491231002X \
                       [--certificate-type 1] --requested-by dpo-01 --out subject.jsonl

``verify`` needs only the store and the exported public key(s) (``yibao-hsm export-public
--label audit/...``), and the HSM only with ``--data-keys`` (every data key a record needs must
unwrap and open its first payload; nothing is printed). A chain without a final checkpoint is a
problem unless ``--open-chain`` names it (live or crashed) or ``--allow-open`` is given; the report
names it either way. ``--expect-head`` takes a signature (or a file of ``head ...`` lines) that an
earlier ``verify`` printed and was kept elsewhere: it must still be in the store. ``--json``
prints the result as one JSON document instead of text (``summary.py``); ``--html`` also writes a
one-page report (``report.py``). ``export`` writes JSON Lines (``exportfile.py``). ``purge`` and
``export`` log in to the HSM with the PIN file the configuration names (``[hsm] user_pin_file``),
never a PIN on the command line.

Exit codes:
  0  success (verify: every chain and checkpoint verified)
  1  verify found a problem (the first per chain is printed; an unfinished chain the operator
     did not name is one), or purge refused
  2  usage or configuration error
  3  the store or the HSM cannot be used
Every error is one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib.metadata
import io
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from hsm.errors import HsmError
from hsm.sm.sm2 import Sm2PublicKey
from hsm.token import HsmToken, TokenConfig
from sidecar import config as sidecar_config
from sidecar.audit import summary
from sidecar.audit.exportfile import export_line
from sidecar.audit.history import History, verify_history
from sidecar.audit.hsm_keys import subject_message
from sidecar.audit.link import audit_keys, build_trail
from sidecar.audit.maintenance import PurgeRefused, export_subject, purge
from sidecar.audit.report import write_report
from sidecar.audit.schema import MIGRATIONS
from sidecar.audit.writer import AuditUnavailable
from sidecar.config import AuditConfig, ConfigError, Settings
from sidecar.store import StoreError, open_store
from sidecar.store.base import now_micros

EXIT_OK, EXIT_FOUND, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"yibao-audit: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _version() -> str:
    try:  # the distribution that installed this command
        return importlib.metadata.version("yibao-sidecar")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="yibao-audit", description="verify, purge and export the audit trail")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    common = _Parser(add_help=False)
    common.add_argument("--config", type=Path, required=True, help="the sidecar's TOML file")
    p = sub.add_parser("verify", parents=[common], help="check every chain and checkpoint")
    p.add_argument("--public-key", type=Path, action="append", required=True, help="PEM")
    p.add_argument(
        "--open-chain", action="append", default=[], help="a live or crashed chain (repeatable)"
    )
    p.add_argument("--allow-open", action="store_true", help="accept every unfinished chain")
    p.add_argument(
        "--expect-head",
        action="append",
        default=[],
        help="a signature (hex) or a file of 'head ...' lines an earlier verify printed",
    )
    p.add_argument("--data-keys", action="store_true", help="unwrap every data key (HSM login)")
    p.add_argument(
        "--json", action="store_true", help="print the result as one JSON document (UTF-8)"
    )
    p.add_argument(
        "--html", type=Path, metavar="FILE", help="also write a one-page HTML report (created 0600)"
    )
    p = sub.add_parser("purge", parents=[common], help="remove records older than DATE")
    p.add_argument("--before", required=True, help="YYYY-MM-DD (UTC)")
    p = sub.add_parser("export", parents=[common], help="one data subject's records, decrypted")
    p.add_argument("--subject", required=True, help="the certificate number")
    p.add_argument("--certificate-type", type=int, default=1, help="contract enum (1: ID card)")
    p.add_argument("--requested-by", required=True, help="who asked (recorded in the trail)")
    p.add_argument("--out", type=Path, required=True, help="output file (created 0600)")
    return parser


def _settings(path: Path) -> tuple[Settings, AuditConfig]:
    settings = sidecar_config.load(path)
    if settings.audit is None:
        raise ConfigError(f"config: {path} has no [audit] section")
    return settings, settings.audit


def _token(settings: Settings) -> HsmToken:
    if settings.hsm is None:
        raise ConfigError("config: the audit trail needs [hsm]")
    h = settings.hsm
    return HsmToken.open(
        TokenConfig(
            module=str(h.module),
            token_label=h.token_label,
            profile=h.profile,
            user_pin_file=str(h.user_pin_file),
            pool_size=1,
        )
    )


async def _verify(args: argparse.Namespace) -> int:
    settings, _ = _settings(args.config)
    keys = []
    for path in args.public_key:
        try:
            keys.append(Sm2PublicKey.from_pem(path.read_bytes()))
        except OSError as exc:
            raise ConfigError(f"--public-key {path}: {exc.strerror}") from None
    heads = [head for value in args.expect_head for head in _heads(value)]
    if args.html is not None:
        _refuse_existing(args.html, "--html")  # before a long verification, not after
    token = _token(settings) if args.data_keys else None
    store = open_store(settings.store)
    try:
        unwrap = audit_keys(token).data_keys.unwrap if token is not None else None
        history = await verify_history(
            store,
            keys,
            open_chains=frozenset(args.open_chain),
            allow_open=args.allow_open,
            expected_heads=heads,
            unwrap=unwrap,
        )
    finally:
        await store.close()
        if token is not None:
            token.close()
    bad = sum(1 for item in history.reports() if item.first is not None)
    code = EXIT_FOUND if bad else EXIT_OK
    ran = summary.options(
        open_chains=args.open_chain,
        allow_open=args.allow_open,
        expected_heads=len(heads),
        data_keys=args.data_keys,
        public_keys=[key.fingerprint() for key in keys],
    )
    if args.html is not None:
        with _create(args.html, "--html") as handle:
            write_report(handle, history, exit_code=code, generated_at=_now(), options=ran)
    if args.json:
        out = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="\n")
        summary.write_json(summary.document(history, code, ran), out)
        out.detach()  # leave sys.stdout open
    else:
        _print_text(history)
    return code


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _print_text(history: History) -> None:
    bad = 0
    for report in history.reports():
        if report.first is not None:
            bad += 1
            print(f"FAIL {report.first}")
        elif report.scope == "registry":
            print(f"ok   registry {report.chain}: {report.records} entries")
        else:
            notes = f" ({'; '.join(report.notes)})" if report.notes else ""
            print(f"ok   chain {report.chain}: {report.records} records, "
                  f"{report.checkpoints} checkpoints{notes}")  # fmt: skip
    for line in history.current:
        print(line)
    print(f"{len(history.chains)} chains, {bad} with problems")


def _refuse_existing(path: Path, option: str) -> None:
    if os.path.lexists(path):
        raise ConfigError(f"{option} {path}: File exists")
    if not path.parent.is_dir():
        raise ConfigError(f"{option} {path}: No such directory")


def _create(path: Path, option: str) -> TextIO:
    """A new file, 0600, never one that exists (a report or an export is never overwritten)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise ConfigError(f"{option} {path}: {exc.strerror}") from None
    return os.fdopen(fd, "w", encoding="utf-8", newline="\n")


_SIGNATURE = re.compile(r"^[0-9a-fA-F]{128}$")


def _heads(value: str) -> list[str]:
    """``--expect-head``: one signature, or a file whose lines end with one."""
    if _SIGNATURE.match(value):
        return [value.lower()]
    try:
        lines = Path(value).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        raise ConfigError(f"--expect-head {value}: not a signature, and {reason}") from None
    heads = [line.split()[-1].lower() for line in lines if line.strip()]
    if not heads or not all(_SIGNATURE.match(head) for head in heads):
        raise ConfigError(f"--expect-head {value}: every line must end with a signature (hex)")
    return heads


async def _purge(args: argparse.Namespace) -> int:
    settings, audit = _settings(args.config)
    try:
        day = dt.date.fromisoformat(args.before)
    except ValueError:
        raise ConfigError("--before must be YYYY-MM-DD") from None
    before = int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp() * 1_000_000)
    token = _token(settings)
    store = open_store(settings.store)
    try:
        keys = audit_keys(token)
        from hsm.keys import KeyStore

        public = [k.public_key for k in KeyStore(token).versions("audit") if k.public_key]
        done = await purge(
            store,
            keys.signer,
            public,
            before=before,
            retention_days=audit.retention_days,
            now=now_micros(),
        )
    finally:
        await store.close()
        token.close()
    for item in done:
        print(f"purged chain {item.chain}: {item.records} records up to position {item.position}")
    print(f"{len(done)} chains purged; each keeps a signed anchor")
    return EXIT_OK


async def _export(args: argparse.Namespace) -> int:
    settings, audit = _settings(args.config)
    token = _token(settings)
    store = open_store(settings.store)
    try:
        await store.migrate(MIGRATIONS)
        keys = audit_keys(token)
        trail = build_trail(audit, store, keys, instance=f"{audit.instance}.export")
        await trail.start()
        try:
            rows = await export_subject(
                store,
                keys.pseudonyms,
                keys.data_keys,
                trail.writer,
                subject=subject_message(args.certificate_type, args.subject),
                requested_by=args.requested_by,
            )
        finally:
            await trail.close()
    finally:
        await store.close()
        token.close()
    with _create(args.out, "--out") as handle:
        for row in rows:
            handle.write(export_line(row))
    print(f"exported {len(rows)} records to {args.out}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    commands = {"verify": _verify, "purge": _purge, "export": _export}
    try:
        return asyncio.run(commands[args.command](args))
    except ConfigError as exc:
        print(f"yibao-audit: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except PurgeRefused as exc:
        print(f"yibao-audit: purge refused: {exc}", file=sys.stderr)
        return EXIT_FOUND
    except (StoreError, HsmError, AuditUnavailable) as exc:
        print(f"yibao-audit: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE


if __name__ == "__main__":
    raise SystemExit(main())

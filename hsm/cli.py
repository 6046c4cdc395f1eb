"""``yibao-hsm``: token and key administration for the security team.

Commands: init-token, keygen, list, export-public, csr, import-cert, rotate,
retire, check.  ``keygen``, ``csr`` and ``import-cert`` take ``--purpose tls`` for the
platform tunnel's TLS client key (:mod:`hsm.tlskey`); ``list`` and ``check`` cover it too.
Common options (before or after the command): --module,
--token-label, --profile, --user-pin-file, --config (TOML with the same keys:
module, token_label, profile, user_pin_file, pool_size; options win), --json, and --version
(before any command: the installed distribution's version). The commands that change the token
(init-token, keygen, import-cert, rotate, retire) need the profile named (--profile or
``profile`` in --config); the read-only ones default to softhsm-sm.

PINs come only from files (mode 0600 or stricter) or, for init-token, from an
interactive prompt; never from argv or the environment.

Exit codes:
  0  success
  1  policy check failed (``check``), or a policy refusal (exportable key,
     readable PIN file, certificate not matching the key)
  2  usage or configuration error (bad option, unreadable file, unknown profile)
  3  HSM error (module failure, wrong PIN, a profile mechanism the token lacks)
  4  not found (token label, key label, key of another type)
Every error is exactly one line on stderr that names the thing at fault.
"""

from __future__ import annotations

import argparse
import getpass
import importlib.metadata
import json
import logging
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from pkcs11 import exceptions as p11e

from hsm.errors import ConfigError, HsmError
from hsm.keys import PURPOSES, KeyInfo, KeyStore
from hsm.pin import Pin, check_pin_file_mode, read_pin_file
from hsm.profiles import known_profiles, load_profile
from hsm.sm2 import Sm2Signer
from hsm.tlskey import TLS_PURPOSE, TlsKeyInfo, TlsKeyStore
from hsm.token import HsmToken, TokenConfig, missing_mechanisms

PROG = "yibao-hsm"
# Commands that create or change objects in the token: they never guess the vendor's mechanism
# numbers (a ceremony that forgot --profile would otherwise key a production token with the
# test profile's). Read-only commands fall back to READ_ONLY_PROFILE.
TOKEN_CHANGING = frozenset({"init-token", "keygen", "import-cert", "rotate", "retire"})
READ_ONLY_PROFILE = "softhsm-sm"
EXIT_OK, EXIT_POLICY, EXIT_USAGE, EXIT_HSM, EXIT_NOT_FOUND = 0, 1, 2, 3, 4


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{self.prog}: {message}")


def _common(*, suppress: bool) -> _Parser:
    """Common options; on subcommands their defaults are suppressed so that an
    option given before the command is not reset by the subcommand's default."""
    common = _Parser(add_help=False)
    kw: dict[str, Any] = {"default": argparse.SUPPRESS} if suppress else {}
    g = common.add_argument_group("token")
    g.add_argument("--config", type=Path, help="TOML configuration file", **kw)
    g.add_argument("--module", help="path of the PKCS#11 module (.so)", **kw)
    g.add_argument("--token-label", help="label of the token", **kw)
    g.add_argument(
        "--profile", help=f"mechanism profile ({', '.join(known_profiles())}) or .toml", **kw
    )
    g.add_argument("--user-pin-file", type=Path, help="file holding the user PIN (mode 0600)", **kw)
    g.add_argument("--json", action="store_true", help="machine-readable output", **kw)
    g.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr", **kw)
    return common


def _version() -> str:
    try:  # the distribution that installed this command
        return importlib.metadata.version("yibao-sidecar")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG, description=__doc__.splitlines()[0], parents=[_common(suppress=False)]
    )
    # Top level only: after a command, --version is that command's key version (keygen, rotate).
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    common = _common(suppress=True)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("init-token", parents=[common], help="initialise a token, set the PINs")
    p.add_argument("--so-pin-file", type=Path, help="file holding the SO PIN (else prompt)")

    p = sub.add_parser("keygen", parents=[common], help="generate the first key of a purpose")
    p.add_argument("--purpose", choices=(*PURPOSES, TLS_PURPOSE), required=True)
    p.add_argument("--version", help="version (default: YYYY-MM of today)")

    sub.add_parser("list", parents=[common], help="list key versions and their state")

    p = sub.add_parser("export-public", parents=[common], help="PEM public key of a sign key")
    p.add_argument("--label", help="key label (default: the active sign key)")
    p.add_argument("--out", type=Path, help="write to this file instead of stdout")

    p = sub.add_parser("csr", parents=[common], help="PKCS#10 request signed in the token")
    p.add_argument("--subject", required=True, help="e.g. CN=yibao-sidecar,O=Example,C=CN")
    p.add_argument("--purpose", choices=("sign", TLS_PURPOSE), default="sign")
    p.add_argument("--label", help="key label (default: the active key of --purpose)")
    p.add_argument("--out", type=Path, help="write to this file instead of stdout")

    p = sub.add_parser("import-cert", parents=[common], help="store the platform's certificate")
    p.add_argument("--cert", type=Path, required=True, help="certificate (PEM or DER)")
    p.add_argument("--purpose", choices=("sign", TLS_PURPOSE), default="sign")
    p.add_argument("--label", help="key label (default: the active key of --purpose)")

    p = sub.add_parser("rotate", parents=[common], help="new active version, old kept")
    p.add_argument("--purpose", choices=PURPOSES, required=True)
    p.add_argument("--version", help="version (default: YYYY-MM of today, or YYYY-MM.N)")

    p = sub.add_parser("retire", parents=[common], help="make a version unusable")
    p.add_argument("--label", required=True, help="e.g. sign/2026-11")

    p = sub.add_parser("check", parents=[common], help="policy check; exit 1 on failure")
    p.add_argument("--so-pin-file", type=Path, help="also check this PIN file's mode")
    return parser


# ---------------------------------------------------------------------- configuration
def _config(args: argparse.Namespace) -> TokenConfig:
    doc: dict[str, Any] = {}
    if args.config is not None:
        try:
            doc = tomllib.loads(args.config.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"config file {args.config} cannot be read: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {args.config} is not valid TOML: {exc}") from None
        unknown = set(doc) - {"module", "token_label", "profile", "user_pin_file", "pool_size"}
        if unknown:
            raise ConfigError(
                f"config file {args.config} has unknown keys: {', '.join(sorted(unknown))}"
            )
    module = args.module or doc.get("module")
    label = args.token_label or doc.get("token_label")
    if not module:
        raise ConfigError("no PKCS#11 module given (--module or module= in --config)")
    if not label:
        raise ConfigError("no token label given (--token-label or token_label= in --config)")
    profile = args.profile or doc.get("profile")
    if not profile:
        if args.command in TOKEN_CHANGING:
            raise ConfigError(
                f"{args.command} changes the token: name its vendor profile with --profile or "
                f"profile= in --config ({', '.join(known_profiles())}, or a .toml file)"
            )
        profile = READ_ONLY_PROFILE
    pin_file = args.user_pin_file or doc.get("user_pin_file")
    pool = doc.get("pool_size", 1)
    if not isinstance(pool, int) or isinstance(pool, bool) or pool < 1:
        raise ConfigError("pool_size in --config must be a positive integer")
    return TokenConfig(
        module=str(module),
        token_label=str(label),
        profile=str(profile),
        user_pin_file=str(pin_file) if pin_file else None,
        pool_size=pool,
    )


def _prompt_pin(what: str) -> Pin:
    if not sys.stdin.isatty():
        raise ConfigError(f"no {what} PIN file given and stdin is not a terminal to prompt")
    first = getpass.getpass(f"{what} PIN: ")
    second = getpass.getpass(f"{what} PIN again: ")
    if first != second:
        raise ConfigError(f"the two {what} PIN entries differ")
    return Pin(first, source=f"{what} PIN prompt")


def _open(cfg: TokenConfig) -> HsmToken:
    return HsmToken.open(cfg)


def _sign_label(store: KeyStore, label: str | None) -> KeyInfo:
    info = store.usable(label) if label else store.active("sign")
    if info.public_key is None:
        raise ConfigError(f"key {info.label} is not an SM2 key pair (sign or audit)")
    return info


# ---------------------------------------------------------------------- output
def _emit(args: argparse.Namespace, text: str, data: Any) -> None:
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
    elif text:
        print(text)


def _key_line(k: KeyInfo) -> str:
    flags = ", ".join(
        f"{n}={'yes' if v else 'no'}" for n, v in k.attributes.items() if v is not None
    )
    fp = f"  sha256:{k.fingerprint}" if k.fingerprint else ""
    cert = "  cert" if k.has_certificate else ""
    return f"{k.label:<18} {k.state:<9} {k.key_type:<5} [{flags}]{fp}{cert}"


def _tls_line(k: TlsKeyInfo) -> str:
    flags = ", ".join(
        f"{n}={'yes' if v else 'no'}" for n, v in k.attributes.items() if v is not None
    )
    cert = "  cert" if k.has_certificate else ""
    return f"{k.label:<18} {'tls':<9} {k.kind:<5} [{flags}]  sha256:{k.fingerprint}{cert}"


def _write(out: Path | None, text: str) -> None:
    if out is None:
        sys.stdout.write(text)
        return
    try:
        out.write_text(text, encoding="ascii")
    except OSError as exc:
        raise ConfigError(f"cannot write {out}: {exc.strerror}") from None


# ---------------------------------------------------------------------- commands
def cmd_init_token(args: argparse.Namespace) -> int:
    from hsm.inittoken import init_token

    cfg = _config(args)
    so = read_pin_file(args.so_pin_file) if args.so_pin_file else _prompt_pin("SO")
    user = read_pin_file(cfg.user_pin_file) if cfg.user_pin_file else _prompt_pin("user")
    slot = init_token(cfg.module, cfg.token_label, so, user)
    _emit(
        args,
        f"initialised token {cfg.token_label!r} (slot {slot})",
        {"token_label": cfg.token_label, "slot": slot},
    )
    return EXIT_OK


def cmd_keygen(args: argparse.Namespace) -> int:
    if args.purpose == TLS_PURPOSE:
        with _open(_config(args)) as token:
            tls = TlsKeyStore(token).generate(args.version)
        _emit(args, f"generated {tls.label} ({tls.kind})", tls.as_json())
        return EXIT_OK
    with _open(_config(args)) as token:
        info = KeyStore(token).generate(args.purpose, args.version)
    _emit(args, f"generated {info.label} ({info.state})", info.as_json())
    return EXIT_OK


def cmd_rotate(args: argparse.Namespace) -> int:
    with _open(_config(args)) as token:
        info = KeyStore(token).rotate(args.purpose, args.version)
    _emit(args, f"rotated {info.purpose}: {info.label} is active", info.as_json())
    return EXIT_OK


def cmd_retire(args: argparse.Namespace) -> int:
    with _open(_config(args)) as token:
        info = KeyStore(token).retire(args.label)
    _emit(args, f"retired {info.label}", info.as_json())
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    with _open(_config(args)) as token:
        keys = KeyStore(token).versions()
        tls = TlsKeyStore(token).versions()
    lines = [_key_line(k) for k in keys] + [_tls_line(k) for k in tls]
    text = "\n".join(lines) or "no keys"
    _emit(args, text, [k.as_json() for k in keys] + [k.as_json() for k in tls])
    return EXIT_OK


def cmd_export_public(args: argparse.Namespace) -> int:
    with _open(_config(args)) as token:
        info = _sign_label(KeyStore(token), args.label)
    assert info.public_key is not None
    pem = info.public_key.pem()
    if args.json:
        _emit(args, "", {"label": info.label, "pem": pem, "fingerprint_sha256": info.fingerprint})
    else:
        _write(args.out, pem)
    return EXIT_OK


def cmd_csr(args: argparse.Namespace) -> int:
    from hsm.x509 import build_csr, parse_subject, to_pem

    parse_subject(args.subject)  # fail before touching the token
    if args.purpose == TLS_PURPOSE:
        with _open(_config(args)) as token:
            tls, der = TlsKeyStore(token).csr(args.subject, args.label)
        pem = to_pem(der, "CERTIFICATE REQUEST")
        if args.json:
            _emit(args, "", {"label": tls.label, "csr_pem": pem})
        else:
            _write(args.out, pem)
        return EXIT_OK
    with _open(_config(args)) as token:
        info = _sign_label(KeyStore(token), args.label)
        assert info.public_key is not None
        signer = Sm2Signer(token, info.label, info.public_key)
        der = build_csr(args.subject, info.public_key, signer.sign_blocking)
    pem = to_pem(der, "CERTIFICATE REQUEST")
    if args.json:
        _emit(args, "", {"label": info.label, "csr_pem": pem})
    else:
        _write(args.out, pem)
    return EXIT_OK


def cmd_import_cert(args: argparse.Namespace) -> int:
    from hsm.x509 import from_pem_or_der

    try:
        data = args.cert.read_bytes()
    except OSError as exc:
        raise ConfigError(f"certificate file {args.cert} cannot be read: {exc.strerror}") from None
    der = from_pem_or_der(data, "CERTIFICATE")
    if args.purpose == TLS_PURPOSE:
        with _open(_config(args)) as token:
            tls = TlsKeyStore(token).import_certificate(der, args.label)
        _emit(args, f"stored certificate for {tls.label}", {"label": tls.label})
        return EXIT_OK
    with _open(_config(args)) as token:
        store = KeyStore(token)
        info = _sign_label(store, args.label)
        store.import_certificate(info.label, der)
    _emit(args, f"stored certificate for {info.label}", {"label": info.label})
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    cfg = _config(args)
    results: list[dict[str, Any]] = []

    def record(name: str, ok: bool, detail: str) -> None:
        results.append({"check": name, "ok": ok, "detail": detail})

    pin: Pin | None = None
    for label, path in (("user PIN file", cfg.user_pin_file), ("SO PIN file", args.so_pin_file)):
        if path is None:
            continue
        try:
            check_pin_file_mode(Path(path))
            record(label, True, f"{path} is a regular file, mode 0600 or stricter")
        except HsmError as exc:
            record(label, False, str(exc))
    if cfg.user_pin_file and all(r["ok"] for r in results):
        pin = read_pin_file(cfg.user_pin_file)
    if pin is None:
        record("token", False, "not checked: no usable user PIN file")
    else:
        profile = load_profile(cfg.profile)
        with HsmToken(
            module_path=cfg.module,
            token_label=cfg.token_label,
            profile=profile,
            pin=pin,
            pool_size=1,
            check_mechanisms=False,
        ) as token:
            missing = missing_mechanisms(token.slot, token.mechs)
            record(
                "mechanisms",
                not missing,
                f"token lacks: {', '.join(missing)}"
                if missing
                else f"all operations of profile {profile.name} present",
            )
            keys = KeyStore(token).versions()
            for k in keys:
                reasons = k.exportable_reasons()
                record(
                    f"key {k.label}",
                    not reasons,
                    "; ".join(reasons) or f"non-extractable, {k.state}",
                )
            for tls in TlsKeyStore(token).versions():
                reasons = tls.exportable_reasons()
                record(
                    f"key {tls.label}",
                    not reasons,
                    "; ".join(reasons) or f"non-extractable, sign-only {tls.kind}",
                )
            for purpose in PURPOSES:
                if purpose not in ("sign", "kek") and not any(k.purpose == purpose for k in keys):
                    continue  # audit and pseudonym keys exist only where the audit trail runs
                active = [k.label for k in keys if k.purpose == purpose and k.state == "active"]
                record(
                    f"active {purpose} key",
                    len(active) == 1,
                    f"{active[0]}"
                    if len(active) == 1
                    else f"{len(active)} active: {', '.join(active) or 'none'}",
                )
    failed = [r for r in results if not r["ok"]]
    text = "\n".join(
        f"{'ok  ' if r['ok'] else 'FAIL'} {r['check']}: {r['detail']}" for r in results
    )
    _emit(args, text, {"ok": not failed, "checks": results})
    return EXIT_POLICY if failed else EXIT_OK


COMMANDS = {
    "init-token": cmd_init_token,
    "keygen": cmd_keygen,
    "list": cmd_list,
    "export-public": cmd_export_public,
    "csr": cmd_csr,
    "import-cert": cmd_import_cert,
    "rotate": cmd_rotate,
    "retire": cmd_retire,
    "check": cmd_check,
}


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(
            level=logging.INFO if args.verbose else logging.ERROR,
            format=f"{PROG}: %(message)s",
            stream=sys.stderr,
        )
        if args.command in TOKEN_CHANGING:
            _config(args)  # the profile and the token are named before any file is read
        return COMMANDS[args.command](args)
    except HsmError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return exc.exit_code
    except p11e.PKCS11Error as exc:
        print(f"{PROG}: PKCS#11 error {type(exc).__name__}", file=sys.stderr)
        return EXIT_HSM
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["build_parser", "main"]

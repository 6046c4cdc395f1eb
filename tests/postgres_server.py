"""A throw-away PostgreSQL for a test session: ``initdb`` + ``pg_ctl`` in a temporary directory.

Used by tests/store_fixtures.py when the configured server cannot be reached, so ``make test``
needs nothing running. It uses Debian's server packages (``scripts/bootstrap.sh`` installs them):
the binaries of the newest ``/usr/lib/postgresql/<version>/bin`` (or ``initdb`` on the PATH).
``initdb`` refuses to run as root, so as root the server runs as the ``postgres`` user (made by
the Debian package) through ``runuser``. It listens on 127.0.0.1 on a free port and on a Unix
socket in its own directory (never the system's), trusts local connections, keeps no data
safely (``fsync=off``: it is deleted at the end), and has the database ``test`` and the
superuser ``postgres``, like the configured server the tests expect.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg

SERVER_USER = "postgres"


class ServerUnavailable(Exception):
    """The throw-away server could not be started; ``str()`` says why in one line."""


@dataclass(frozen=True)
class ThrowAwayServer:
    """A running server: its conninfo, and how to stop it (which deletes its files)."""

    directory: Path
    port: int
    bindir: Path
    run_as: str | None

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} dbname=test user={SERVER_USER}"

    def stop(self) -> None:
        try:
            _run(self, "pg_ctl", "stop", "-D", str(self.directory / "data"), "-m", "immediate",
                 "-w", "-t", "30")  # fmt: skip
        except ServerUnavailable:
            pass  # already gone; the directory goes anyway
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


def start() -> ThrowAwayServer:
    """Initialise and start a server; ServerUnavailable (one line) if it cannot be done."""
    bindir = _bindir()
    run_as = _unprivileged_user()
    directory = Path(tempfile.mkdtemp(prefix="yibao-test-pg-"))
    if run_as is not None:
        entry = pwd.getpwnam(run_as)
        os.chown(directory, entry.pw_uid, entry.pw_gid)
    server = ThrowAwayServer(directory, _free_port(), bindir, run_as)
    try:
        _run(server, "initdb", "-D", str(directory / "data"), "-U", SERVER_USER, "-A", "trust",
             "-E", "UTF8", "--locale=C", "--no-sync")  # fmt: skip
        options = (
            f"-c listen_addresses=127.0.0.1 -p {server.port} -k {directory} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=300 -c timezone=UTC -c log_timezone=UTC"
        )
        _run(server, "pg_ctl", "start", "-D", str(directory / "data"), "-w", "-t", "60",
             "-l", str(directory / "server.log"), "-o", options)  # fmt: skip
        with psycopg.connect(
            server.dsn.replace("dbname=test", "dbname=postgres"),
            autocommit=True,
            connect_timeout=10,
        ) as admin:
            admin.execute("CREATE DATABASE test")
    except (ServerUnavailable, psycopg.Error) as exc:
        log = directory / "server.log"
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
        server.stop()
        raise ServerUnavailable(" ".join([str(exc).strip().splitlines()[-1], *tail])) from None
    return server


def _bindir() -> Path:
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if versions:
        return versions[-1].parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    raise ServerUnavailable(
        "no initdb: install Debian's postgresql package (scripts/bootstrap.sh does)"
    )


def _unprivileged_user() -> str | None:
    """None when not root; else the user that runs the server (initdb refuses root)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise ServerUnavailable(
            f"running as root and there is no '{SERVER_USER}' user to run initdb as "
            "(Debian's postgresql package makes it)"
        ) from None
    return SERVER_USER


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _run(server: ThrowAwayServer, program: str, *args: str) -> None:
    argv = [str(server.bindir / program), *args]
    if server.run_as is not None:
        argv = ["runuser", "-u", server.run_as, "--", *argv]
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=server.directory,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C of pytest does not reach the server
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServerUnavailable(f"{program}: {exc}") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise ServerUnavailable(
            f"{program} failed (exit {done.returncode}): {detail[-1] if detail else ''}"
        )

#!/usr/bin/env bash
# Installs everything the project needs on a fresh machine, idempotently:
# Debian packages (only the missing ones), the virtual environment in .venv with the pinned
# Python packages (the sidecar and the dev kit in devkit/), and the Node-based build tools (buf)
# in node_modules.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "bootstrap: $*" >&2; }

# --- Debian packages ------------------------------------------------------------------------
# faketime: the demo test freezes every process's clock in the 16:00-24:00 UTC window.
# libcurl4-openssl-dev (+ a C compiler): pycurl is built against Debian's libcurl and OpenSSL.
# libengine-pkcs11-openssl: libp11's pkcs11 engine, so OpenSSL signs TLS handshakes with the token key.
# chromium: the audit report (yibao-audit verify --html) is tested in a real headless browser.
# strace: the test that lists every file the sidecar opens (no TLS private key on disk in HSM mode).
# postgresql: the server binaries (initdb, pg_ctl) and the `postgres` user; when no PostgreSQL is
# configured or reachable, the test session runs a throw-away one with them (tests/postgres_server.py).
DEBS=(openssl nodejs npm ca-certificates faketime libcurl4-openssl-dev gcc libc6-dev libengine-pkcs11-openssl
      chromium strace postgresql)
missing=()
# The generated-clients check (tests/clients) generates Go and Java from proto/ and compiles the Java.
DEBS+=(protobuf-compiler protoc-gen-go protoc-gen-go-grpc libprotobuf-java default-jdk-headless)
for pkg in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# prometheus: its promtool checks the PrometheusRule's alert rules and proves each fires (tests/k8s).
dpkg-query -W -f='${Status}' prometheus 2>/dev/null | grep -q "install ok installed" || missing+=(prometheus)
# nodejs from another source (e.g. NodeSource) ships npm itself.
if command -v npm >/dev/null 2>&1; then
  missing=("${missing[@]/npm}"); missing=("${missing[@]/nodejs}")
fi
read -r -a missing <<<"${missing[*]:-}"
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- Python ---------------------------------------------------------------------------------
PYTHON=${PYTHON:-}
if [[ -z "$PYTHON" ]]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 11))'; then
      PYTHON=$candidate; break
    fi
  done
fi
[[ -n "$PYTHON" ]] || { log "Python >= 3.11 is required"; exit 1; }

stamp=.venv/.bootstrap-$(cat pyproject.toml devkit/pyproject.toml clients/python/pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [[ ! -f "$stamp" ]]; then
  log "creating .venv with $($PYTHON --version)"
  [[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  # Two distributions, both editable: the runtime (with its dev tools) and the dev kit
  # (devkit/: simulator, demo, development PKI; it registers `yibao-sidecar simulate` and `demo`).
  # pycurl from source (--no-binary): the wheel bundles its own libcurl and OpenSSL, which
  # cannot load Debian's OpenSSL engines (the TLS key in the HSM); tests/platform checks it.
  PYCURL_SSL_LIBRARY=openssl .venv/bin/python -m pip install --quiet --disable-pip-version-check \
    --no-binary pycurl -c constraints.txt -e '.[dev]' -e ./devkit -e ./clients/python
  rm -f .venv/.bootstrap-*
  touch "$stamp"
fi

# --- Node tools (buf) -----------------------------------------------------------------------
if [[ ! -x node_modules/.bin/buf ]] || [[ package-lock.json -nt node_modules/.bin/buf ]]; then
  log "installing buf from the npm registry"
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
  touch node_modules/.bin/buf
fi
log "ready"

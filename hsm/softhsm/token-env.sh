#!/usr/bin/env bash
# Create a private SoftHSM token directory and configuration for one run.
#
#   eval "$(hsm/softhsm/token-env.sh /tmp/run-123)"
#
# writes  <dir>/softhsm2.conf   (directories.tokendir=<dir>/tokens,
#                                objectstore.backend=file, log.level=ERROR)
# creates <dir>/tokens (mode 0700)
# prints  export SOFTHSM2_CONF=<dir>/softhsm2.conf
# Tokens are then created with softhsm2-util (see hsm/softhsm/README.md).
set -euo pipefail

if [[ $# -ne 1 || -z "$1" ]]; then
	echo "usage: $0 DIR" >&2
	exit 2
fi
mkdir -p "$1"
DIR="$(cd "$1" && pwd)"
install -d -m 0700 "$DIR/tokens"
umask 077
cat >"$DIR/softhsm2.conf" <<CONF
# SoftHSM v2 configuration for one yibao-sidecar test/dev run
directories.tokendir = $DIR/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
CONF
printf 'export SOFTHSM2_CONF=%q\n' "$DIR/softhsm2.conf"

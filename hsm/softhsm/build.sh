#!/usr/bin/env bash
# Build SoftHSM 2.6.1 (Debian 12 source) with the yibao SM patch
# (softhsm2-2.6.1-sm.patch: vendor-defined SM2 / SM3 / SM4 mechanisms) and
# cache the result.
#
#   hsm/softhsm/build.sh            -> prints the path of libsofthsm2.so (last stdout line)
#
# Output: ${YIBAO_CACHE:-$HOME/.cache/yibao-sidecar}/softhsm/<sha256>/
#           lib/libsofthsm2.so   the PKCS#11 module
#           bin/softhsm2-util    token initialisation tool (statically linked to the same code)
#           BUILDINFO            versions and hashes
# <sha256> = SHA-256 of (patch file || this script).  A complete cache directory
# makes the script exit 0 immediately.  Progress goes to stderr.
#
# Side effects outside the cache, only when needed:
#   - apt-get install of missing build dependencies (see DEB_PACKAGES);
#   - /etc/apt/sources.list.d/yibao-deb-src.sources (+ apt-get update) when no
#     deb-src entry is configured at all.
# Nothing is installed into /usr (no `make install`).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PATCH="$HERE/softhsm2-2.6.1-sm.patch"
SELF="$HERE/build.sh"

SOFTHSM_VERSION="2.6.1"
# SHA-256 of Debian's softhsm2_2.6.1.orig.tar.gz (identical to the upstream release tarball)
ORIG_SHA256="ac9ac1e3f4402f88bf3e626a18f070f8031c031947ed469c6e17482495ec72b6"
DEB_PACKAGES=(build-essential libssl-dev patch)
DEB_SRC_FILE="/etc/apt/sources.list.d/yibao-deb-src.sources"

log() { printf '[softhsm-build] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ -f "$PATCH" ]] || die "patch not found: $PATCH"

HASH="$(cat "$PATCH" "$SELF" | sha256sum | cut -d' ' -f1)"
CACHE_ROOT="${YIBAO_CACHE:-$HOME/.cache/yibao-sidecar}/softhsm"
OUT="$CACHE_ROOT/$HASH"
LIB="$OUT/lib/libsofthsm2.so"
UTIL="$OUT/bin/softhsm2-util"

is_complete() { [[ -f "$OUT/BUILDINFO" && -s "$LIB" && -x "$UTIL" ]]; }

# Fast path: nothing to do.
if is_complete; then
	echo "$LIB"
	exit 0
fi

mkdir -p "$CACHE_ROOT"
# Serialise concurrent builds (e.g. parallel test workers).
exec 9>"$CACHE_ROOT/.lock"
flock 9
if is_complete; then
	echo "$LIB"
	exit 0
fi

as_root() {
	if [[ "$(id -u)" == 0 ]]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo "$@"
	else
		die "need root (or sudo) to run: $*"
	fi
}

APT_UPDATED=0
apt_update_once() {
	if [[ "$APT_UPDATED" == 0 ]]; then
		log "apt-get update"
		as_root apt-get update -qq >&2
		APT_UPDATED=1
	fi
}

# 1. Build dependencies (installed only when missing).
missing=()
for pkg in "${DEB_PACKAGES[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$pkg")
	fi
done
if ((${#missing[@]})); then
	apt_update_once
	log "installing: ${missing[*]}"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# 2. A deb-src entry, so that `apt-get source` works.
have_deb_src() {
	grep -rhsqE '^[[:space:]]*deb-src[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null && return 0
	grep -rhsqiE '^[[:space:]]*Types:.*[[:space:]]deb-src([[:space:]]|$)' /etc/apt/sources.list.d/*.sources 2>/dev/null && return 0
	return 1
}
if ! have_deb_src; then
	log "no deb-src configured; writing $DEB_SRC_FILE"
	tmp_src="$(mktemp)"
	if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
		# deb822 (Debian 12): same URIs/Suites/Components/Signed-By, Types: deb-src
		awk 'BEGIN{IGNORECASE=1} /^[[:space:]]*Types:/ {print "Types: deb-src"; next} {print}' \
			/etc/apt/sources.list.d/debian.sources >"$tmp_src"
	elif [[ -f /etc/apt/sources.list ]]; then
		# one-line format: turn each "deb ..." line into a deb822 stanza
		awk '$1=="deb" {
			opts=""; i=2
			if ($2 ~ /^\[/) { while ($i !~ /\]$/) { opts=opts" "$i; i++ } opts=opts" "$i; i++ }
			printf "Types: deb-src\nURIs: %s\nSuites: %s\nComponents:", $i, $(i+1)
			for (j=i+2; j<=NF; j++) printf " %s", $j
			if (opts ~ /signed-by=/) { match(opts, /signed-by=[^] ]*/); printf "\nSigned-By: %s", substr(opts, RSTART+10, RLENGTH-10) }
			printf "\n\n" }' /etc/apt/sources.list >"$tmp_src"
	fi
	[[ -s "$tmp_src" ]] || die "cannot derive a deb-src entry from the apt configuration"
	as_root install -m 0644 "$tmp_src" "$DEB_SRC_FILE"
	rm -f "$tmp_src"
	APT_UPDATED=0
	apt_update_once
fi

# 3. Fetch the source tarball (apt verifies it against the signed Sources index).
WORK="$(mktemp -d "${TMPDIR:-/tmp}/yibao-softhsm.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
BUILD_LOG="$WORK/build.log"
run() {
	if ! "$@" >>"$BUILD_LOG" 2>&1; then
		log "command failed: $*"
		tail -n 60 "$BUILD_LOG" >&2
		exit 1
	fi
}
start=$(date +%s)
log "apt-get source --tar-only softhsm2"
(cd "$WORK" && run apt-get source --tar-only softhsm2)
ORIG="$(ls "$WORK"/softhsm2_*.orig.tar.* 2>/dev/null | head -n 1)"
[[ -n "$ORIG" ]] || die "apt-get source produced no orig tarball"
[[ "$(basename "$ORIG")" == "softhsm2_${SOFTHSM_VERSION}.orig.tar."* ]] ||
	die "expected softhsm2 ${SOFTHSM_VERSION}, got $(basename "$ORIG")"
echo "$ORIG_SHA256  $ORIG" | sha256sum -c --quiet - >&2 || die "unexpected SHA-256 of $(basename "$ORIG")"

# 4. Unpack, patch, configure, build.
log "unpacking and patching"
tar -xf "$ORIG" -C "$WORK"
SRC="$WORK/softhsm2-${SOFTHSM_VERSION}"
[[ -d "$SRC" ]] || die "unexpected tarball layout"
(cd "$SRC" && run patch -p1 --forward --no-backup-if-mismatch -i "$PATCH")

log "configure (OpenSSL backend, no GOST)"
(cd "$SRC" && run ./configure --with-crypto-backend=openssl --disable-gost --enable-ecc --enable-eddsa \
	--disable-p11-kit --disable-static)

JOBS="$(nproc 2>/dev/null || echo 2)"
log "make -j$JOBS src/lib (libsofthsm2.so)"
run make -j"$JOBS" -C "$SRC/src/lib"
log "make src/bin/util (softhsm2-util)"
run make -j"$JOBS" -C "$SRC/src/bin/util"

# 5. Install into the cache atomically.
STAGE="$CACHE_ROOT/.stage-$HASH-$$"
rm -rf "$STAGE"
install -D -m 0755 "$SRC/src/lib/.libs/libsofthsm2.so" "$STAGE/lib/libsofthsm2.so"
install -D -m 0755 "$SRC/src/bin/util/softhsm2-util" "$STAGE/bin/softhsm2-util"
{
	echo "softhsm2 ${SOFTHSM_VERSION} ($(basename "$ORIG"), sha256 $ORIG_SHA256)"
	echo "patch sha256 $(sha256sum "$PATCH" | cut -d' ' -f1)"
	echo "cache key $HASH"
	echo "openssl $(openssl version 2>/dev/null || echo unknown)"
	echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) in $(($(date +%s) - start)) s"
} >"$STAGE/BUILDINFO"
rm -rf "$OUT"
mv "$STAGE" "$OUT"
log "done in $(($(date +%s) - start)) s: $OUT"

echo "$LIB"

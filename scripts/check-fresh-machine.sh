#!/usr/bin/env bash
# Checks the README's two commands where nothing is installed but Rust: a minimal Debian 12
# root (debootstrap --variant=minbase: no compiler, no git, no Python, no protoc), with
# the host's Rust toolchain bind-mounted read-only, and a clean clone of this repository's
# committed HEAD. A green run on a developer machine hides missing install steps (it once
# hid libprotobuf-dev); this run does not.
#
#   sudo scripts/check-fresh-machine.sh           # scripts/serve.sh: builds, then serves
#   sudo scripts/check-fresh-machine.sh --tests   # also scripts/test.sh (about 40 minutes)
#
# Needs root (chroot and bind mounts), debootstrap, and the network the README needs
# (Debian's mirror, crates.io, PyPI, npm). The pristine root is built once under
# $FRESH_DIR (default /var/tmp/strata-fresh) and copied for each run, so every run starts
# from nothing. The broker it starts binds 127.0.0.1 and is stopped by PID.
set -euo pipefail
ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FRESH_DIR="${FRESH_DIR:-/var/tmp/strata-fresh}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
RUN_TESTS=false
[ "${1:-}" = --tests ] && RUN_TESTS=true

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'check-fresh-machine: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (chroot and bind mounts)"
command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
toolchain="$(rustc --print sysroot 2>/dev/null)" || die "no Rust toolchain on this machine"

base="$FRESH_DIR/base"
if [ ! -f "$base/.complete" ]; then
  log "building a minimal Debian 12 root in $base (once)"
  rm -rf "$base"
  mkdir -p "$FRESH_DIR"
  debootstrap --variant=minbase bookworm "$base" "$MIRROR" >"$FRESH_DIR/debootstrap.log" 2>&1 ||
    die "debootstrap failed; see $FRESH_DIR/debootstrap.log"
  touch "$base/.complete"
fi

run="$FRESH_DIR/run"
mounts=()
broker_pid=""
cleanup() {
  if [ -n "$broker_pid" ]; then
    kill -- "-$broker_pid" 2>/dev/null || kill "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
  fi
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -l "${mounts[$i]}" 2>/dev/null || true; done
}
trap cleanup EXIT

log "copying the pristine root to $run"
rm -rf "$run"
cp -a "$base" "$run"
cp /etc/resolv.conf "$run/etc/resolv.conf"
# The network's trusted CAs (a machine that got Rust from rustup over HTTPS has them; a
# network with a TLS-inspecting proxy adds its own), where OpenSSL, pip and npm look.
mkdir -p "$run/etc/ssl/certs" "$run/usr/local/share/ca-certificates"
cp /etc/ssl/certs/ca-certificates.crt "$run/etc/ssl/certs/ca-certificates.crt"
cp -a /usr/local/share/ca-certificates/. "$run/usr/local/share/ca-certificates/" 2>/dev/null || true
for fs in proc sys dev dev/pts; do
  mount --bind "/$fs" "$run/$fs"
  mounts+=("$run/$fs")
done
mkdir -p "$run/opt/rust"
mount --bind "$toolchain" "$run/opt/rust"
mount -o remount,bind,ro "$run/opt/rust"
mounts+=("$run/opt/rust")

log "cloning $(git -C "$ROOT_DIR" rev-parse --short HEAD) (committed state only)"
git clone --quiet --no-local "$ROOT_DIR" "$run/src"

in_root() {
  local bundle=/etc/ssl/certs/ca-certificates.crt
  chroot "$run" /usr/bin/env -i HOME=/root TERM=dumb CI="${CI:-true}" \
    SSL_CERT_FILE=$bundle PIP_CERT=$bundle REQUESTS_CA_BUNDLE=$bundle NODE_EXTRA_CA_CERTS=$bundle \
    PATH=/opt/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    /bin/bash -c "$1"
}

log "the README's first command: scripts/serve.sh (a clean release build first)"
setsid bash -c "$(declare -f in_root); run='$run'; in_root 'cd /src && exec scripts/serve.sh'" \
  >"$FRESH_DIR/serve.log" 2>&1 &
broker_pid=$!
deadline=$((SECONDS + 3600))
until bash -c 'exec 3<>/dev/tcp/127.0.0.1/9644 && printf "GET /readyz HTTP/1.0\r\n\r\n" >&3 && grep -q "200 OK" <&3' 2>/dev/null; do
  kill -0 "$broker_pid" 2>/dev/null || die "scripts/serve.sh stopped before serving; last lines of $FRESH_DIR/serve.log:
$(tail -n 30 "$FRESH_DIR/serve.log")"
  [ "$SECONDS" -lt "$deadline" ] || die "scripts/serve.sh did not serve within an hour; see $FRESH_DIR/serve.log"
  sleep 5
done
log "scripts/serve.sh serves: /readyz answers 200 on 127.0.0.1:9644"
kill -- "-$broker_pid" 2>/dev/null || kill "$broker_pid"
wait "$broker_pid" 2>/dev/null || true
broker_pid=""

if [ "$RUN_TESTS" = true ]; then
  log "the README's second command: scripts/test.sh"
  in_root 'cd /src && scripts/test.sh' 2>&1 | tee "$FRESH_DIR/test.log"
  [ "${PIPESTATUS[0]}" = 0 ] || die "scripts/test.sh failed; see $FRESH_DIR/test.log"
fi
log "fresh-machine check passed"

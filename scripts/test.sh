#!/usr/bin/env bash
# Runs every test: installs what the tests need (idempotent), checks formatting and
# clippy, runs the Rust unit and integration tests (cargo test), then the black-box suite
# (pytest) against a real `strata` process with real clients, etcd and kcat.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh test

echo "== rustfmt and clippy"
cargo fmt --all -- --check
cargo clippy --locked -p strata-broker -p strata-tiering --all-targets -- -D warnings

echo "== cargo test"
cargo test --locked -p strata-broker -p strata-tiering 2>&1

echo "== building the release binary for the black-box tests"
cargo build --locked --release -p strata-broker
export STRATA_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/strata"

echo "== pytest"
# shellcheck source=scripts/test-python.sh
source scripts/test-python.sh
# Two files at a time (STRATA_TEST_WORKERS; 1 runs them one by one): most of the suite
# waits for servers, so two workers on two cores take about 60% of the serial time. A
# file's tests stay on one worker (their module fixtures are shared); each worker has its
# own etcd and moto, and free_port gives the workers disjoint ports (tests/servers.py).
workers="${STRATA_TEST_WORKERS:-2}"
if [ "$workers" -gt 1 ]; then
  parallel=(-n "$workers" --dist loadfile)
else
  parallel=(-p no:xdist)
fi
"$(test_python)" -m pytest tests -q -p no:cacheprovider "${parallel[@]}" --durations=25

#!/usr/bin/env bash
# Starts one broker with embedded defaults: Kafka on 127.0.0.1:9092, metrics on
# 127.0.0.1:9644, metadata and data under ./data. Extra arguments go to `strata serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh build
exec cargo run --locked --release -p strata-broker --bin strata -- serve "$@"

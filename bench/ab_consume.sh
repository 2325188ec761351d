#!/usr/bin/env bash
# A/B consume throughput of two strata binaries on the same data shape: for each round and
# binary, a fresh broker on loopback (embedded metadata, temp dir), 1,000,000 records of
# 1 KiB produced to PARTITIONS partitions (default 1; acks=all), then read twice from
# offset 0 with strata-bench consume. Prints one JSON line per consume and the broker's CPU ticks
# (user + system, produce and both reads) per round. Asserts nothing: a measurement.
#
#   bench/ab_consume.sh OLD_BINARY NEW_BINARY [ROUNDS]
#   PARTITIONS=8 BENCH=/path/to/strata-bench bench/ab_consume.sh OLD NEW 3
#
# Used for the cost of the damage checks on the read path (docs/benchmarks.md).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OLD="$1"; NEW="$2"; ROUNDS="${3:-3}"
BENCH="${BENCH:-$ROOT/target/release/strata-bench}"
PARTITIONS="${PARTITIONS:-1}"
[ -x "$BENCH" ] || cargo build --release -p strata-bench
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
for round in $(seq 1 "$ROUNDS"); do
  for which in old new; do
    binary="$OLD"; [ "$which" = new ] && binary="$NEW"
    work="$(mktemp -d -t strata-ab.XXXXXX)"
    port="$(free_port)"; http="$(free_port)"
    "$binary" serve --listen "127.0.0.1:$port" --http "127.0.0.1:$http" --data-dir "$work/data" \
      --metadata embedded >"$work/log" 2>&1 &
    pid=$!
    until curl -sf "http://127.0.0.1:$http/readyz" >/dev/null; do sleep 0.2; done
    "$BENCH" produce --bootstrap "127.0.0.1:$port" --topic t --partitions "$PARTITIONS" --record-size 1024 \
      --acks all --records 1000000 --duration 60 --name produce >/dev/null
    for _ in 1 2; do
      "$BENCH" consume --bootstrap "127.0.0.1:$port" --topic t --name "consume-$which" | tail -n 1
    done
    echo "{\"round\":$round,\"binary\":\"$which\",\"broker_cpu_ticks\":$(awk '{print $14 + $15}' "/proc/$pid/stat")}"
    kill "$pid"; wait "$pid" || true
    rm -rf "$work"
  done
done

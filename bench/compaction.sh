#!/usr/bin/env bash
# Compaction benchmark: builds strata and strata-bench (release), starts one broker
# (loopback, free ports, a temp dir), writes a keyed data set to a compacted topic, and
# measures in one run on one machine:
#
#   - produce throughput of keyed records into a compacted topic (every record's key is
#     checked at produce, the one produce path that decodes records);
#   - what the cleaner does with it: passes, time per pass, bytes before and after, MiB/s
#     of log a pass gets through, the broker's CPU and peak RSS while cleaning;
#   - a replay from offset 0 after cleaning: records and MiB/s.
#
# It stops everything it started by PID and replaces the "Compaction" section of
# docs/benchmarks.md (between the compaction:begin/end markers).
#
#   bench/compaction.sh                        # about 2 minutes after the build on 2 cores
#   DATA_MIB=64 OUT=/tmp/c.md bench/compaction.sh   # a smoke run, report elsewhere
#
# Settings (environment): DATA_MIB (MiB of record values, 1024), RECORD_SIZE (1024), KEYS
# (distinct keys, 100000: with the defaults each key gets about 10 versions), SEGMENT_MIB
# (segment.bytes, 64), DIRTY_RATIO (min.cleanable.dirty.ratio, 0.5), SETTLE_SECONDS (how
# long the log size must stay put to count as cleaned, 10), CLEAN_TIMEOUT (600),
# SKIP_BUILD=1. Asserts nothing about timings.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SCRIPT=compaction.sh
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
OUT="${OUT:-$ROOT/docs/benchmarks.md}"
DATA_MIB="${DATA_MIB:-1024}"
RECORD_SIZE="${RECORD_SIZE:-1024}"
KEYS="${KEYS:-100000}"
SEGMENT_MIB="${SEGMENT_MIB:-64}"
DIRTY_RATIO="${DIRTY_RATIO:-0.5}"
SETTLE_SECONDS="${SETTLE_SECONDS:-10}"
CLEAN_TIMEOUT="${CLEAN_TIMEOUT:-600}"
RECORDS=$(( DATA_MIB * 1048576 / RECORD_SIZE ))
TOPIC="compacted"

if [ -z "${SKIP_BUILD:-}" ]; then
    log "building strata and strata-bench (release)"
    cargo build --release -p strata-broker -p strata-bench
fi
STRATA="$ROOT/target/release/strata"
BENCH="$ROOT/target/release/strata-bench"

WORK="$(mktemp -d -t strata-compaction.XXXXXX)"
cleanup() {
    stop_broker
    rm -rf "$WORK"
}
trap cleanup EXIT

KAFKA_PORT="$(free_port)"
HTTP_PORT="$(free_port)"
while [ "$HTTP_PORT" = "$KAFKA_PORT" ]; do HTTP_PORT="$(free_port)"; done
BOOTSTRAP="127.0.0.1:$KAFKA_PORT"
METRICS_URL="http://127.0.0.1:$HTTP_PORT/metrics"
BROKER_ENV=(STRATA_LOG_CLEANER_INTERVAL_MS=1000)
BROKER_CMD=("$STRATA" serve --listen "$BOOTSTRAP" --http "127.0.0.1:$HTTP_PORT" --data-dir "$WORK/data" --metadata embedded)
start_broker

size() { snapshot size; msum size strata_log_size_bytes "topic=$TOPIC"; }

log "producing $RECORDS records of $RECORD_SIZE B over $KEYS keys to $TOPIC"
CPU0="$(cpu "$BROKER_PID")"
"$BENCH" produce --bootstrap "$BOOTSTRAP" --name keyed --topic "$TOPIC" --records "$RECORDS" \
    --record-size "$RECORD_SIZE" --keys "$KEYS" \
    --topic-config cleanup.policy=compact \
    --topic-config "segment.bytes=$(( SEGMENT_MIB * 1048576 ))" \
    --topic-config "min.cleanable.dirty.ratio=$DIRTY_RATIO" \
    --topic-config delete.retention.ms=0 | tee "$WORK/produce.out" >&2
PRODUCE_CPU="$(calc %.1f "$(cpu "$BROKER_PID") - $CPU0")"

log "waiting for the cleaner to settle (the log size unchanged for ${SETTLE_SECONDS}s)"
CLEAN_START=$(date +%s)
CPU1="$(cpu "$BROKER_PID")"
last="$(size)"; stable_since=$(date +%s)
while :; do
    sleep 1
    now="$(size)"
    if [ "$now" != "$last" ]; then last="$now"; stable_since=$(date +%s); fi
    if [ $(( $(date +%s) - stable_since )) -ge "$SETTLE_SECONDS" ]; then break; fi
    [ $(( $(date +%s) - CLEAN_START )) -lt "$CLEAN_TIMEOUT" ] || die "the cleaner did not settle in ${CLEAN_TIMEOUT}s"
done
CLEAN_CPU="$(calc %.1f "$(cpu "$BROKER_PID") - $CPU1")"
RSS_KIB="$(peak_rss_kib "$BROKER_PID")"
FINAL_BYTES="$last"

log "replaying from offset 0"
"$BENCH" consume --bootstrap "$BOOTSTRAP" --name replay --topic "$TOPIC" --compacted \
    | tee "$WORK/consume.out" >&2

# Per pass: elapsed_ms, log bytes before and removed, from the broker's "compacted" lines.
sed 's/\x1b\[[0-9;]*m//g' "$WORK"/strata.*.log | grep ' compacted ' | grep -E "topic=\"?$TOPIC\"? " >"$WORK/passes" || true
PASSES="$(wc -l <"$WORK/passes")"
field() { sed -n "s/.*$1=\([0-9]*\).*/\1/p" "$WORK/passes"; }
PASS_MS_TOTAL="$(field elapsed_ms | awk '{ s += $1 } END { print s + 0 }')"
REMOVED_TOTAL="$(field removed_bytes | awk '{ s += $1 } END { print s + 0 }')"
SCANNED_TOTAL="$(field before_bytes | awk '{ s += $1 } END { print s + 0 }')"
PASS_TABLE="$(paste <(field before_bytes) <(field removed_bytes) <(field elapsed_ms) | awk '{
    printf "| %d | %.1f | %.1f | %.2f | %.0f |\n", NR, $1 / 1048576, $2 / 1048576, $3 / 1000, ($3 > 0 ? $1 / 1048576 / ($3 / 1000) : 0) }')"

PRODUCE_JSON="$(grep '^{' "$WORK/produce.out" | tail -n 1)"
CONSUME_JSON="$(grep '^{' "$WORK/consume.out" | tail -n 1)"
echo "$PRODUCE_JSON" >"$WORK/p.json"; echo "$CONSUME_JSON" >"$WORK/c.json"
PRODUCE_MIBS="$(jget "$WORK/p.json" mib_per_s)"
PRODUCE_RPS="$(calc %.0f "$(jget "$WORK/p.json" records_per_s)")"
REPLAY_RECORDS="$(jget "$WORK/c.json" records)"
REPLAY_MIBS="$(jget "$WORK/c.json" mib_per_s)"
REPLAY_OK="$(jget "$WORK/c.json" ok)"
CPU_MODEL="$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
CORES="$(nproc)"
MEM_GIB="$(awk '/MemTotal/ { printf "%.0f", $2 / 1048576 }' /proc/meminfo)"

REPORT="$WORK/report.md"
{
    echo "<!-- compaction:begin -->"
    echo "## Compaction"
    echo
    echo "\`bench/compaction.sh\` on $(date -u +%Y-%m-%d): $CORES cores ($CPU_MODEL), $MEM_GIB GiB RAM,"
    echo "one broker, data on the local disk. $RECORDS records of $RECORD_SIZE B (${DATA_MIB} MiB of"
    echo "values) over $KEYS keys, one partition, \`segment.bytes\` ${SEGMENT_MIB} MiB,"
    echo "\`min.cleanable.dirty.ratio\` $DIRTY_RATIO, \`log_cleaner_interval_ms\` 1000. The cleaner"
    echo "runs while the data is written, as it would in production. The data set fits in the page"
    echo "cache, so passes read memory, not the disk: the speed is the cleaner's CPU cost (decoding,"
    echo "hashing keys, re-encoding and writing the copies), the upper bound a disk would lower."
    echo
    echo "| what | result |"
    echo "|---|---|"
    echo "| produce (keyed, acks=all; keys checked at produce) | $PRODUCE_MIBS MiB/s, $PRODUCE_RPS records/s; broker CPU $PRODUCE_CPU s |"
    echo "| cleaner passes | $PASSES, $(calc %.1f "$PASS_MS_TOTAL / 1000") s in all; $(calc %.0f "$REMOVED_TOTAL / 1048576") MiB removed |"
    echo "| cleaner speed over all passes | $(awk -v b="$SCANNED_TOTAL" -v ms="$PASS_MS_TOTAL" 'BEGIN { if (ms > 0) printf "%.0f", b / 1048576 / (ms / 1000); else print "–" }') MiB of log per second |"
    echo "| log after cleaning | $(calc %.1f "$FINAL_BYTES / 1048576") MiB (the active segment is never cleaned) |"
    echo "| broker CPU after the last write, peak RSS | $CLEAN_CPU s, $(calc %.0f "$RSS_KIB / 1024") MiB |"
    echo "| replay from offset 0 after cleaning | $REPLAY_RECORDS records, $REPLAY_MIBS MiB/s (ok: $REPLAY_OK) |"
    echo
    echo "Each pass (from the broker's \`compacted\` log lines; the log before the pass is what it"
    echo "reads at most):"
    echo
    echo "| pass | log before (MiB) | removed (MiB) | seconds | MiB/s |"
    echo "|---|---|---|---|---|"
    echo "$PASS_TABLE"
    echo
    echo "Command: \`DATA_MIB=$DATA_MIB KEYS=$KEYS SEGMENT_MIB=$SEGMENT_MIB bench/compaction.sh\`."
    echo "<!-- compaction:end -->"
} >"$REPORT"

write_section compaction "$REPORT"

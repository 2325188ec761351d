#!/usr/bin/env bash
# Historical reads, before and after, in one run: the same data set in the same bucket,
# replayed by a baseline broker binary (BASE_STRATA, "before") and this tree's (STRATA,
# "after"), interleaved (before, after, before, after, ...) ROUNDS times, so that both see
# the same busy machine. Each figure is reported as a ratio to its floor measured in the
# same round: produce p99 during a cold replay against idle; cold replay against raw
# ranged GETs of the same server (moto only); warm replay against the local tier.
#
# Per round and binary, against one store (STORE=moto: a local moto S3 server; STORE=dir:
# a local-directory object store, with a small cache):
#   - cold replay (empty cache: restart, cache directory removed) of a topic with small
#     segments (SMALL_SEGMENT_MIB, 1) and of one with large segments (LARGE_SEGMENT_MIB, 64);
#   - warm replay of the large-segment topic (straight after its cold replay);
#   - replay of the same data from the local tier (a topic without tiered storage);
#   - produce ack latency at E2E_RATE MiB/s, idle and during a cold replay;
#   - (moto) raw ranged GETs of the same objects, S3_GET_CONCURRENCY in flight (s3-get).
#
# It stops everything it started by PID and replaces only its own section of
# docs/benchmarks.md (between the replay:begin/end markers).
#
#   bench/replay.sh                       # about 4 minutes per store after the build
#   STORE=dir ROUNDS=2 OUT=/tmp/r.md bench/replay.sh
#
# Settings (environment): STORE ("moto dir"), ROUNDS (3), DATA_MIB (256), PARTITIONS (4),
# RECORD_SIZE (1024), CHUNK_BYTES (remote_chunk_bytes and the s3-get range, 4194304),
# S3_GET_CONCURRENCY (16), E2E_RATE (10), E2E_WARMUP (3), E2E_SECONDS (measured, 6),
# DIR_CACHE_MEMORY_BYTES / DIR_CACHE_DISK_BYTES (the small cache of STORE=dir, 32 MiB /
# 128 MiB), BASE_STRATA (/tmp/strata-base/strata), NEW_STRATA (this tree's release build),
# SKIP_BUILD=1, EXTRA_ENV (more
# STRATA_* settings for the "after" broker, space-separated). Asserts nothing about timings.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SCRIPT=replay.sh
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
OUT="${OUT:-$ROOT/docs/benchmarks.md}"
STORES="${STORE:-moto dir}"
ROUNDS="${ROUNDS:-3}"
DATA_MIB="${DATA_MIB:-256}"
PARTITIONS="${PARTITIONS:-4}"
RECORD_SIZE="${RECORD_SIZE:-1024}"
SMALL_SEGMENT_MIB="${SMALL_SEGMENT_MIB:-1}"
LARGE_SEGMENT_MIB="${LARGE_SEGMENT_MIB:-64}"
CHUNK_BYTES="${CHUNK_BYTES:-4194304}"
S3_GET_CONCURRENCY="${S3_GET_CONCURRENCY:-16}"
E2E_RATE="${E2E_RATE:-10}"
E2E_WARMUP="${E2E_WARMUP:-3}"
E2E_SECONDS="${E2E_SECONDS:-6}"
DIR_CACHE_MEMORY_BYTES="${DIR_CACHE_MEMORY_BYTES:-33554432}"
DIR_CACHE_DISK_BYTES="${DIR_CACHE_DISK_BYTES:-134217728}"
BASE_STRATA="${BASE_STRATA:-/tmp/strata-base/strata}"
EXTRA_ENV="${EXTRA_ENV:-}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BUCKET="strata-bench"
RECORDS=$(( DATA_MIB * 1048576 / RECORD_SIZE ))

command -v python3 >/dev/null || die "python3 not found"
[ -x "$BASE_STRATA" ] || die "no baseline broker at $BASE_STRATA (BASE_STRATA)"
if [ -z "${SKIP_BUILD:-}" ]; then
    log "building strata and strata-bench (release)"
    cargo build --release -p strata-broker -p strata-bench
fi
NEW_STRATA="${NEW_STRATA:-$TARGET/release/strata}"
BENCH="$TARGET/release/strata-bench"

WORK="$(mktemp -d -t strata-replay.XXXXXX)"
RESULTS="$WORK/results.tsv"
: >"$RESULTS"
MOTO_PID=""
BG_PID=""
cleanup() {
    [ -z "$BG_PID" ] || stop_tree "$BG_PID"
    stop_broker
    stop_pid "$MOTO_PID" moto; MOTO_PID=""
    rm -rf "$WORK"
}
trap cleanup EXIT

KAFKA_PORT="$(free_port)"
HTTP_PORT="$(free_port)"
while [ "$HTTP_PORT" = "$KAFKA_PORT" ]; do HTTP_PORT="$(free_port)"; done
BOOTSTRAP="127.0.0.1:$KAFKA_PORT"
METRICS_URL="http://127.0.0.1:$HTTP_PORT/metrics"

# record STORE ROUND BINARY NAME VALUE
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RESULTS"; }
# client NAME CMD...: runs a strata-bench command; its last JSON line goes to $WORK/NAME.json.
client() {
    local name="$1"; shift
    if ! "$@" >"$WORK/$name.out" 2>"$WORK/$name.err"; then
        log "$name failed:"; tail -5 "$WORK/$name.err" >&2
    fi
    grep '^{' "$WORK/$name.out" | tail -n 1 >"$WORK/$name.json" || true
    grep -q '"ok":true' "$WORK/$name.json" || log "$name did not report ok"
}
# tier_state TOPIC: "log_end remote_end local_start" summed over partitions.
tier_state() {
    snapshot state
    echo "$(msum state strata_log_end_offset topic="$1") $(msum state strata_remote_log_end_offset topic="$1") $(msum state strata_local_log_start_offset topic="$1")"
}
wait_tiered() {
    local topic="$1" log_end remote_end local_start
    for _ in $(seq 1 600); do
        read -r log_end remote_end local_start <<<"$(tier_state "$topic")"
        if [ "$log_end" -eq "$RECORDS" ] && [ "$remote_end" -eq "$log_end" ] && [ "$local_start" -eq "$log_end" ]; then
            return 0
        fi
        sleep 0.5
    done
    die "$topic: log end $log_end, remote log end $remote_end, local log start $local_start after 300 s"
}
# use_broker BINARY: (re)starts the broker with an empty cache.
use_broker() {
    stop_broker
    rm -rf "$CACHE"
    BROKER_CMD=("$1" serve --listen "$BOOTSTRAP" --http "127.0.0.1:$HTTP_PORT" --data-dir "$DATA" --metadata embedded)
    start_broker
}
consume() { client "$1" "$BENCH" consume --bootstrap "$BOOTSTRAP" --name "$1" --topic "$2"; }
# e2e_during NAME LOAD_CMD...: an e2e run with LOAD_CMD started when its warm-up ends.
e2e_during() {
    local name="$1"; shift
    local window="$WORK/$name.window"
    rm -f "$window"
    client "$name" "$BENCH" e2e --bootstrap "$BOOTSTRAP" --name "$name" --topic "e2e-$name-$RANDOM" \
        --partitions "$PARTITIONS" --record-size "$RECORD_SIZE" --acks all --rate "$E2E_RATE" \
        --duration $(( E2E_WARMUP + E2E_SECONDS )) --warmup "$E2E_WARMUP" --window-file "$window" &
    BG_PID=$!
    for _ in $(seq 1 1200); do
        [ -s "$window" ] && break
        kill -0 "$BG_PID" 2>/dev/null || break
        sleep 0.05
    done
    "$@"
    wait "$BG_PID" || true
    BG_PID=""
}

RUN_START=$(date +%s)
for STORE_NOW in $STORES; do
    DATA="$WORK/$STORE_NOW/data"
    CACHE="$WORK/$STORE_NOW/cache"
    mkdir -p "$DATA"
    COMMON_ENV=(
        STRATA_REMOTE_STORAGE_ENABLE=true
        STRATA_REMOTE_UPLOAD_INTERVAL_MS=200
        STRATA_REMOTE_CHUNK_BYTES="$CHUNK_BYTES"
        STRATA_REMOTE_CACHE_DIR="$CACHE"
        STRATA_LOG_SEGMENT_MS_MIN=1000
    )
    if [ "$STORE_NOW" = moto ]; then
        command -v moto_server >/dev/null || die "moto_server not found (pip install 'moto[server]')"
        S3_PORT="$(free_port)"
        S3_ENDPOINT="http://127.0.0.1:$S3_PORT"
        moto_server -H 127.0.0.1 -p "$S3_PORT" >"$WORK/moto.log" 2>&1 &
        MOTO_PID=$!
        for _ in $(seq 1 300); do
            curl -fsS -o /dev/null "$S3_ENDPOINT/moto-api/" 2>/dev/null && break
            sleep 0.1
        done
        curl -fsS -X PUT -o /dev/null "$S3_ENDPOINT/$BUCKET" || die "could not create bucket $BUCKET"
        COMMON_ENV+=(
            STRATA_OBJECT_STORE="s3://$BUCKET" STRATA_S3_ENDPOINT="$S3_ENDPOINT" STRATA_S3_REGION=us-east-1
            STRATA_S3_PATH_STYLE=true STRATA_S3_ALLOW_HTTP=true
            AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
        )
    else
        mkdir -p "$WORK/$STORE_NOW/bucket"
        COMMON_ENV+=(
            STRATA_OBJECT_STORE="file://$WORK/$STORE_NOW/bucket"
            STRATA_REMOTE_CACHE_MEMORY_BYTES="$DIR_CACHE_MEMORY_BYTES"
            STRATA_REMOTE_CACHE_DISK_BYTES="$DIR_CACHE_DISK_BYTES"
        )
    fi
    BROKER_ENV=("${COMMON_ENV[@]}")

    # ---- the data set, written once (by the baseline broker) ----
    use_broker "$BASE_STRATA"
    SMALL="replay-small-$STORE_NOW"; LARGE="replay-large-$STORE_NOW"; LOCAL="replay-local-$STORE_NOW"
    for spec in "$SMALL $SMALL_SEGMENT_MIB true" "$LARGE $LARGE_SEGMENT_MIB true" "$LOCAL $LARGE_SEGMENT_MIB false"; do
        read -r topic seg tiered <<<"$spec"
        log "writing $DATA_MIB MiB to $topic (segment.bytes $seg MiB, tiered: $tiered)"
        extra=(--topic-config remote.storage.enable="$tiered")
        [ "$tiered" = true ] && extra+=(--topic-config local.retention.bytes=0 --topic-config segment.ms=2000)
        client "produce-$topic" "$BENCH" produce --bootstrap "$BOOTSTRAP" --name "produce-$topic" --topic "$topic" \
            --partitions "$PARTITIONS" --record-size "$RECORD_SIZE" --acks all --records "$RECORDS" --duration 300 \
            --topic-config segment.bytes=$(( seg * 1048576 )) "${extra[@]}"
    done
    wait_tiered "$SMALL"
    wait_tiered "$LARGE"
    log "data set tiered"

    for round in $(seq 1 "$ROUNDS"); do
        for binary in before after; do
            if [ "$binary" = before ]; then
                BROKER_ENV=("${COMMON_ENV[@]}"); bin="$BASE_STRATA"
            else
                # shellcheck disable=SC2206
                BROKER_ENV=("${COMMON_ENV[@]}" $EXTRA_ENV); bin="$NEW_STRATA"
            fi
            tag="$STORE_NOW-$round-$binary"
            use_broker "$bin"
            consume "cold-small-$tag" "$SMALL"
            record "$STORE_NOW" "$round" "$binary" cold_small "$(jget "$WORK/cold-small-$tag.json" mib_per_s)"
            use_broker "$bin"
            consume "cold-large-$tag" "$LARGE"
            record "$STORE_NOW" "$round" "$binary" cold_large "$(jget "$WORK/cold-large-$tag.json" mib_per_s)"
            consume "warm-large-$tag" "$LARGE"
            record "$STORE_NOW" "$round" "$binary" warm_large "$(jget "$WORK/warm-large-$tag.json" mib_per_s)"
            consume "local-$tag" "$LOCAL"
            record "$STORE_NOW" "$round" "$binary" local "$(jget "$WORK/local-$tag.json" mib_per_s)"
            e2e_during "idle-$tag" true
            record "$STORE_NOW" "$round" "$binary" p99_idle "$(jget "$WORK/idle-$tag.json" produce.ack_latency_ms.p99)"
            use_broker "$bin"
            e2e_during "loaded-$tag" consume "replay-$tag" "$LARGE"
            record "$STORE_NOW" "$round" "$binary" p99_replay "$(jget "$WORK/loaded-$tag.json" produce.ack_latency_ms.p99)"
            record "$STORE_NOW" "$round" "$binary" replay_under_e2e "$(jget "$WORK/replay-$tag.json" mib_per_s)"
        done
        if [ "$STORE_NOW" = moto ]; then
            stop_broker
            for topic in "$SMALL" "$LARGE"; do
                name="raw-$topic-$round"
                client "$name" env AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
                    "$BENCH" s3-get --name "$name" --endpoint "$S3_ENDPOINT" --bucket "$BUCKET" --region us-east-1 \
                    --path-style --allow-http --contains "topics/$topic." --range-bytes "$CHUNK_BYTES" \
                    --concurrency "$S3_GET_CONCURRENCY"
                kind=raw_large; [ "$topic" = "$SMALL" ] && kind=raw_small
                record "$STORE_NOW" "$round" raw "$kind" "$(jget "$WORK/$name.json" mib_per_s)"
            done
        fi
    done
    stop_broker
    stop_pid "$MOTO_PID" moto; MOTO_PID=""
    rm -rf "${WORK:?}/$STORE_NOW"
done
RUN_SECONDS=$(( $(date +%s) - RUN_START ))
cp "$RESULTS" "${RESULTS_COPY:-/dev/null}" 2>/dev/null || true

# ---- the report ----
REPORT="$WORK/report.md"
python3 - "$RESULTS" >"$WORK/tables.md" <<'PY'
import statistics, sys
from collections import defaultdict
rows = defaultdict(dict)  # (store, round) -> {(binary, name): value}
for line in open(sys.argv[1]):
    store, rnd, binary, name, value = line.rstrip('\n').split('\t')
    try:
        rows[(store, rnd)][(binary, name)] = float(value)
    except ValueError:
        pass
def med(values):
    values = [v for v in values if v is not None]
    if not values:
        return '–'
    return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"
figures = [
    ('produce ack p99, ms: idle', lambda r, b: r.get((b, 'p99_idle'))),
    ('produce ack p99, ms: during a cold replay', lambda r, b: r.get((b, 'p99_replay'))),
    ('**p99 during replay / idle** (goal ≤ 1.25)', lambda r, b: ratio(r.get((b, 'p99_replay')), r.get((b, 'p99_idle')))),
    ('cold replay MiB/s under that produce load', lambda r, b: r.get((b, 'replay_under_e2e'))),
    ('cold replay MiB/s, small segments', lambda r, b: r.get((b, 'cold_small'))),
    ('cold replay MiB/s, large segments', lambda r, b: r.get((b, 'cold_large'))),
    ('raw ranged GETs MiB/s, small-segment objects', lambda r, b: r.get(('raw', 'raw_small'))),
    ('raw ranged GETs MiB/s, large-segment objects', lambda r, b: r.get(('raw', 'raw_large'))),
    ('**cold small / best raw** (goal ≥ 1.0)', lambda r, b: ratio(r.get((b, 'cold_small')), best_raw(r))),
    ('**cold large / best raw** (goal ≥ 1.0)', lambda r, b: ratio(r.get((b, 'cold_large')), best_raw(r))),
    ('warm replay MiB/s, large segments', lambda r, b: r.get((b, 'warm_large'))),
    ('local-tier replay MiB/s', lambda r, b: r.get((b, 'local'))),
    ('**warm / local** (goal ≥ 1.0)', lambda r, b: ratio(r.get((b, 'warm_large')), r.get((b, 'local')))),
]
def ratio(a, b):
    return a / b if a is not None and b else None
def best_raw(r):
    raws = [v for k, v in r.items() if k[0] == 'raw']
    return max(raws) if raws else None
for store in sorted({s for s, _ in rows}):
    rounds = [rows[k] for k in sorted(rows) if k[0] == store]
    print(f"\n#### {'moto S3 server' if store == 'moto' else 'local-directory object store, small cache'} ({len(rounds)} rounds)\n")
    print("| figure | before (baseline binary) | after (this tree) |")
    print("|---|---:|---:|")
    for label, get in figures:
        before = [get(r, 'before') for r in rounds]
        after = [get(r, 'after') for r in rounds]
        if all(v is None for v in before + after):
            continue
        print(f"| {label} | {med(before)} | {med(after)} |")
PY
{
    echo "<!-- replay:begin (generated by bench/replay.sh; do not edit by hand) -->"
    echo "## Historical reads: before and after, same run"
    echo
    echo "Generated by \`bench/replay.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC') in ${RUN_SECONDS} s, one machine"
    echo "($(nproc) cores, $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo), shared and busy: read ratios, not absolute figures)."
    echo "Before = baseline binary \`$BASE_STRATA\`, after = \`$NEW_STRATA\` (this tree: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ', with uncommitted changes')),"
    echo "interleaved before/after in each of ${ROUNDS} rounds against the same bucket; each cell is the median"
    echo "of the rounds (range in brackets); each ratio is taken within a round, then the median."
    echo "Data set: ${DATA_MIB} MiB of ${RECORD_SIZE} B records in ${PARTITIONS} partitions, per topic: small segments"
    echo "${SMALL_SEGMENT_MIB} MiB, large ${LARGE_SEGMENT_MIB} MiB, \`remote_chunk_bytes\` ${CHUNK_BYTES}; default settings otherwise"
    echo "(the local-directory store runs with a small cache: ${DIR_CACHE_MEMORY_BYTES} B memory, ${DIR_CACHE_DISK_BYTES} B disk)."
    [ -z "$EXTRA_ENV" ] || echo "The after broker also had: \`$EXTRA_ENV\`."
    echo "Produce latency: \`strata-bench e2e\` at ${E2E_RATE} MiB/s, acks=all, ${E2E_SECONDS} s measured after ${E2E_WARMUP} s"
    echo "of warm-up, idle and with a cold replay of the large-segment topic started when the warm-up ends."
    echo "Raw GETs: \`strata-bench s3-get\`, ${S3_GET_CONCURRENCY} ranged GETs of ${CHUNK_BYTES} B in flight, no broker running."
    cat "$WORK/tables.md"
    echo
    echo "Command: \`STORE=\"$STORES\" ROUNDS=$ROUNDS DATA_MIB=$DATA_MIB bench/replay.sh\`"
    echo "<!-- replay:end -->"
} >"$REPORT"
write_section replay "$REPORT"

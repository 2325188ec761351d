#!/usr/bin/env bash
# Tiered-storage benchmark: builds strata and strata-bench (release), starts a moto S3
# server and one broker with tiered storage on it (loopback only, free ports, temp dirs),
# writes a data set whose history leaves local disk, then measures, in one run on one
# machine:
#
#   - replay throughput from the local tier, from the bucket with an empty cache (cold)
#     and again with the cache holding it all (warm);
#   - the raw ranged-GET throughput of the same moto server (strata-bench s3-get: the
#     same S3 client, the same 4 MiB ranges, 4 and 16 requests in flight, no broker);
#   - object-store requests per GiB ingested and per GiB replayed (/metrics deltas);
#   - produce latency at a steady rate, idle, while a cold replay runs, and (a control)
#     while s3-get keeps moto as busy with no replay in the broker.
#
# For before/after ratios of these figures (a baseline binary and this tree interleaved
# against the same bucket: produce p99 during replay / idle, cold replay / raw GETs for
# 1 MiB and 64 MiB segments, warm / local) run bench/replay.sh, which writes its own
# section.
#
# It stops everything it started by PID and replaces the "Tiered storage" section of
# docs/benchmarks.md (between the tiering:begin/end markers; the rest of the page is
# bench/run.sh's).
#
#   bench/tiering.sh                    # about 2.5 minutes after the build on 2 cores
#   DATA_MIB=128 OUT=/tmp/t.md bench/tiering.sh   # a smoke run, report elsewhere
#
# Settings (environment): DATA_MIB (MiB of record values in the data set, 1024),
# RECORD_SIZE (1024), PARTITIONS (4), SEGMENT_MIB (segment.bytes, 64), CHUNK_BYTES
# (remote_chunk_bytes and the s3-get range, 4194304), S3_GET_CONCURRENCY ("4 16"),
# E2E_RATE (MiB/s of the latency runs, 10), E2E_WARMUP (3), E2E_MIN_SECONDS and
# E2E_MAX_SECONDS (bounds on their measured window, 5 and 60), S3_LOAD_CONCURRENCY (GETs
# in flight in the control, 4), SEGMENT_MS (segment.ms of the tiered topic, 5000),
# UPLOAD_TIMEOUT (seconds to wait for the data to leave local disk, 300), SKIP_BUILD=1.
# Needs moto_server (PyPI moto[server]), python3 and curl. Asserts nothing about timings.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SCRIPT=tiering.sh
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
OUT="${OUT:-$ROOT/docs/benchmarks.md}"
DATA_MIB="${DATA_MIB:-1024}"
RECORD_SIZE="${RECORD_SIZE:-1024}"
PARTITIONS="${PARTITIONS:-4}"
SEGMENT_MIB="${SEGMENT_MIB:-64}"
CHUNK_BYTES="${CHUNK_BYTES:-4194304}"
S3_GET_CONCURRENCY="${S3_GET_CONCURRENCY:-4 16}"
S3_LOAD_CONCURRENCY="${S3_LOAD_CONCURRENCY:-4}"   # s3-get as background load in step 8
E2E_RATE="${E2E_RATE:-10}"
E2E_WARMUP="${E2E_WARMUP:-3}"
E2E_MIN_SECONDS="${E2E_MIN_SECONDS:-5}"
E2E_MAX_SECONDS="${E2E_MAX_SECONDS:-60}"
UPLOAD_TIMEOUT="${UPLOAD_TIMEOUT:-300}"
# segment.ms of the tiered topic: rolls the last, partly filled segment soon after the
# data set is written, so that it too is uploaded and the whole history leaves local disk.
SEGMENT_MS="${SEGMENT_MS:-5000}"
BUCKET="strata-bench"

RECORDS=$(( DATA_MIB * 1048576 / RECORD_SIZE ))
SEGMENT_BYTES=$(( SEGMENT_MIB * 1048576 ))
# The disk cache can hold the whole data set twice over (objects carry batch headers and
# indexes too), so the warm replay finds room for everything.
CACHE_DISK_BYTES=$(( DATA_MIB * 2 * 1048576 ))
[ "$CACHE_DISK_BYTES" -ge 1073741824 ] || CACHE_DISK_BYTES=1073741824


command -v moto_server >/dev/null || die "moto_server not found (pip install 'moto[server]')"
command -v python3 >/dev/null || die "python3 not found"

if [ -z "${SKIP_BUILD:-}" ]; then
    log "building strata and strata-bench (release)"
    cargo build --release -p strata-broker -p strata-bench
fi
STRATA="$ROOT/target/release/strata"
BENCH="$ROOT/target/release/strata-bench"

WORK="$(mktemp -d -t strata-tiering.XXXXXX)"
DATA="$WORK/data"
CACHE="$WORK/cache"
RESULTS="$WORK/results.jsonl"
MOTO_PID=""
BG_PIDS=()

cleanup() {
    for pid in "${BG_PIDS[@]}"; do stop_tree "$pid"; done
    stop_broker
    stop_pid "$MOTO_PID" moto; MOTO_PID=""
    rm -rf "$WORK"
}
trap cleanup EXIT

S3_PORT="$(free_port)"
KAFKA_PORT="$(free_port)"
while [ "$KAFKA_PORT" = "$S3_PORT" ]; do KAFKA_PORT="$(free_port)"; done
HTTP_PORT="$(free_port)"
while [ "$HTTP_PORT" = "$S3_PORT" ] || [ "$HTTP_PORT" = "$KAFKA_PORT" ]; do HTTP_PORT="$(free_port)"; done
BOOTSTRAP="127.0.0.1:$KAFKA_PORT"
S3_ENDPOINT="http://127.0.0.1:$S3_PORT"
METRICS_URL="http://127.0.0.1:$HTTP_PORT/metrics"

# ---- moto ----
MOTO_CMD=(moto_server -H 127.0.0.1 -p "$S3_PORT")
log "starting: ${MOTO_CMD[*]}"
"${MOTO_CMD[@]}" >"$WORK/moto.log" 2>&1 &
MOTO_PID=$!
for _ in $(seq 1 300); do
    if curl -fsS -o /dev/null "$S3_ENDPOINT/moto-api/" 2>/dev/null; then break; fi
    kill -0 "$MOTO_PID" 2>/dev/null || { cat "$WORK/moto.log" >&2; die "moto exited during start-up"; }
    sleep 0.1
done
curl -fsS -o /dev/null "$S3_ENDPOINT/moto-api/" || { cat "$WORK/moto.log" >&2; die "moto not ready after 30 s"; }
# moto does not check signatures: a plain PUT creates the bucket.
curl -fsS -X PUT -o /dev/null "$S3_ENDPOINT/$BUCKET" || { cat "$WORK/moto.log" >&2; die "could not create bucket $BUCKET"; }
MOTO_VERSION="$(python3 -c 'import moto; print(moto.__version__)' 2>/dev/null || echo unknown)"
log "moto $MOTO_VERSION (pid $MOTO_PID) on $S3_ENDPOINT, bucket $BUCKET"

# ---- the broker ----
BROKER_ENV=(
    STRATA_OBJECT_STORE="s3://$BUCKET"
    STRATA_S3_ENDPOINT="$S3_ENDPOINT"
    STRATA_S3_REGION=us-east-1
    STRATA_S3_PATH_STYLE=true
    STRATA_S3_ALLOW_HTTP=true
    AWS_ACCESS_KEY_ID=testing
    AWS_SECRET_ACCESS_KEY=testing
    STRATA_REMOTE_STORAGE_ENABLE=true
    STRATA_REMOTE_UPLOAD_INTERVAL_MS=200
    STRATA_REMOTE_CHUNK_BYTES="$CHUNK_BYTES"
    STRATA_REMOTE_CACHE_DIR="$CACHE"
    STRATA_REMOTE_CACHE_DISK_BYTES="$CACHE_DISK_BYTES"
    # The tiered topic rolls on segment.ms=SEGMENT_MS (5 s), below the production floor
    # (log_segment_ms_min, 60 s) that refuses it otherwise.
    STRATA_LOG_SEGMENT_MS_MIN="$SEGMENT_MS"
)
BROKER_CMD=("$STRATA" serve --listen "$BOOTSTRAP" --http "127.0.0.1:$HTTP_PORT" --data-dir "$DATA" --metadata embedded)
# A restart with an empty cache directory: nothing of the data set is cached anywhere in
# the broker (memory or disk) afterwards. Object-store counters restart from zero too.
restart_broker_cold() {
    log "restarting the broker with an empty cache"
    stop_broker
    rm -rf "$CACHE"
    start_broker
}
start_broker

# ---- measuring helpers ----
# machine_cpu: CPU seconds (user + nice + system) every process on the machine has used
# since boot, from /proc/stat; a step's delta minus what broker, moto and clients used is
# what other processes (a build, another test) took meanwhile.
machine_cpu() { awk -v tck="$CLK_TCK" '/^cpu / { printf "%.2f", ($2 + $3 + $4) / tck }' /proc/stat; }
# proc_cpu FILE: "pid comm cpu_seconds kernel?" of every process and kernel thread now
# (kernel? is 1 for kernel threads: writeback, softirq and the like).
proc_cpu() {
    python3 - "$CLK_TCK" >"$1" <<'EOF'
import os, sys
tck = float(sys.argv[1])
me = str(os.getpid())
for pid in filter(str.isdigit, os.listdir('/proc')):
    if pid == me:
        continue
    try:
        with open(f'/proc/{pid}/stat') as f:
            stat = f.read()
    except OSError:
        continue
    comm = stat[stat.index('(') + 1:stat.rindex(')')].replace(' ', '_')
    fields = stat[stat.rindex(')') + 2:].split()
    kernel = 1 if pid == '2' or fields[1] == '2' else 0
    print(pid, comm, (int(fields[11]) + int(fields[12])) / tck, kernel)
EOF
}
# proc_delta BEFORE AFTER: what processes other than broker, moto and clients used between
# two proc_cpu files: "KERNEL_SECONDS<TAB>top three user processes as 'comm 1.2 s, ...'".
proc_delta() {
    awk -v broker="$BROKER_PID" -v moto="$MOTO_PID" '
        NR == FNR { before[$1 " " $2] = $3; next }
        $1 == broker || $1 == moto || $2 ~ /^(strata|strata-bench|timeout|time|sync)$/ { next }
        {
            d = $3 - before[$1 " " $2]
            if ($4 == 1) kernel += d
            else if (d >= 0.05) printf "%.2f %s\n", d, $2 >"/dev/stderr"
        }
        END { printf "%.2f\t", kernel }' "$1" "$2" 2>"$WORK/procs.user"
    sort -rn "$WORK/procs.user" | head -n 3 | awk '{ printf "%s%s %.1f s", (NR > 1 ? ", " : ""), $2, $1 }'
}
# account NAME MACHINE_BEFORE MACHINE_AFTER PROCS_BEFORE PROCS_AFTER: splits what the
# machine used beyond broker, moto and clients into kernel threads and other processes.
account() {
    local name="$1" other delta
    other="$(other_cpu "$2" "$3" "${BROKER_CPU_S[$name]}" "${MOTO_CPU_S[$name]}" "${CLIENT_CPU_S[$name]}")"
    delta="$(proc_delta "$4" "$5")"
    KERNEL_CPU_S[$name]="$(awk -v k="${delta%%$'\t'*}" -v o="$other" 'BEGIN { printf "%.2f", (k < o ? k : o) }')"
    OTHER_CPU_S[$name]="$(calc %.2f "$other - ${KERNEL_CPU_S[$name]}")"
    OTHER_TOP[$name]="${delta#*$'\t'}"
}

COMMANDS=()
declare -A WALL_S BROKER_CPU_S MOTO_CPU_S CLIENT_CPU_S KERNEL_CPU_S OTHER_CPU_S OTHER_TOP OUTFILE
# other_cpu MACHINE_BEFORE MACHINE_AFTER USED...: machine CPU seconds not in USED.
other_cpu() {
    local before="$1" after="$2"; shift 2
    awk -v a="$after" -v b="$before" -v used="$*" 'BEGIN {
        n = split(used, u, " "); o = a - b
        for (i = 1; i <= n; i++) if (u[i] != "nan") o -= u[i]
        printf "%.2f", (o < 0 ? 0 : o) }'
}
TIME_CMD=()
if [ -x /usr/bin/time ]; then TIME_CMD=(/usr/bin/time -f '%U %S' -o); fi
RUN_START=$(date +%s)

# run_client NAME OUTFILE CMD...: one client command, bounded in time; client CPU goes to
# OUTFILE.cpu. Returns its exit status.
run_client() {
    local name="$1" out="$2"; shift 2
    COMMANDS+=("${*#"$ROOT/"}")
    log "$name: $*"
    local status=0
    if [ ${#TIME_CMD[@]} -gt 0 ]; then
        "${TIME_CMD[@]}" "$out.cpu" timeout -k 10 600 "$@" >"$out" 2>"$out.err" || status=$?
    else
        timeout -k 10 600 "$@" >"$out" 2>"$out.err" || status=$?
    fi
    return "$status"
}
client_cpu() { if [ -s "$1.cpu" ]; then awk 'END { print $1 + $2 }' "$1.cpu"; else echo nan; fi; }
# finish NAME OUT STATUS: print the output, keep the JSON line.
finish() {
    local name="$1" out="$2" status="$3"
    cat "$out" >&2
    if [ -s "$out.err" ]; then sed 's/^/    stderr: /' "$out.err" | head -20 >&2; fi
    grep '^{' "$out" | tail -n 1 >>"$RESULTS" || true
    if [ "$status" -ne 0 ] || ! grep -q '"ok":true' "$out"; then
        log "$name FAILED (exit status $status); see the output above"
        FAILED+=("$name")
    fi
    OUTFILE[$name]="$out"
}
FAILED=()
# step NAME CMD...: runs one client command with the broker and moto CPU it costs.
step() {
    local name="$1"; shift
    local out="$WORK/$name.out" status=0
    local b0 m0 w0 s0 b1 m1 w1 s1
    # Dirty pages of earlier steps are written back now, not by kernel threads mid-step.
    sync
    proc_cpu "$WORK/procs.before"
    b0="$(cpu "$BROKER_PID")"; m0="$(cpu "$MOTO_PID")"; s0="$(machine_cpu)"; w0="$(date +%s.%N)"
    run_client "$name" "$out" "$@" || status=$?
    b1="$(cpu "$BROKER_PID")"; m1="$(cpu "$MOTO_PID")"; s1="$(machine_cpu)"; w1="$(date +%s.%N)"
    proc_cpu "$WORK/procs.after"
    WALL_S[$name]="$(calc %.2f "$w1 - $w0")"
    BROKER_CPU_S[$name]="$(calc %.2f "$b1 - $b0")"
    MOTO_CPU_S[$name]="$(calc %.2f "$m1 - $m0")"
    CLIENT_CPU_S[$name]="$(client_cpu "$out")"
    account "$name" "$s0" "$s1" "$WORK/procs.before" "$WORK/procs.after"
    finish "$name" "$out" "$status"
}

# tier_state SNAPSHOT TOPIC: "log_end remote_end local_start" summed over partitions.
tier_state() {
    echo "$(msum "$1" strata_log_end_offset topic="$2") $(msum "$1" strata_remote_log_end_offset topic="$2") $(msum "$1" strata_local_log_start_offset topic="$2")"
}

RUN_ID="$(date +%s)"
LOCAL_TOPIC="tier-local-$RUN_ID"
TIERED_TOPIC="tier-data-$RUN_ID"
PRODUCE_ARGS=(--partitions "$PARTITIONS" --record-size "$RECORD_SIZE" --acks all --records "$RECORDS" --duration 300)

# ---- 1. the local tier: the same data set on a topic without tiered storage ----
step produce-local "$BENCH" produce --bootstrap "$BOOTSTRAP" --name produce-local --topic "$LOCAL_TOPIC" \
    "${PRODUCE_ARGS[@]}" --topic-config remote.storage.enable=false --topic-config segment.bytes="$SEGMENT_BYTES"
step replay-local "$BENCH" consume --bootstrap "$BOOTSTRAP" --name replay-local --topic "$LOCAL_TOPIC"
run_client delete-local "$WORK/delete-local.out" "$BENCH" delete-topics --bootstrap "$BOOTSTRAP" "$LOCAL_TOPIC" \
    || log "could not delete $LOCAL_TOPIC"

# ---- 2. ingest into a tiered topic; wait until its whole history is in the bucket ----
snapshot ingest-before
step produce-tiered "$BENCH" produce --bootstrap "$BOOTSTRAP" --name produce-tiered --topic "$TIERED_TOPIC" \
    "${PRODUCE_ARGS[@]}" --topic-config segment.bytes="$SEGMENT_BYTES" --topic-config segment.ms="$SEGMENT_MS" \
    --topic-config local.retention.bytes=0
log "waiting until $TIERED_TOPIC is uploaded and gone from local disk (remote log end = local log start = log end = $RECORDS)"
wait_start=$(date +%s.%N)
wb0="$(cpu "$BROKER_PID")"; wm0="$(cpu "$MOTO_PID")"; ws0="$(machine_cpu)"
while :; do
    snapshot ingest-after
    read -r log_end remote_end local_start <<<"$(tier_state ingest-after "$TIERED_TOPIC")"
    if [ "$log_end" -eq "$RECORDS" ] && [ "$remote_end" -eq "$log_end" ] && [ "$local_start" -eq "$log_end" ]; then
        break
    fi
    if awk -v s="$wait_start" -v now="$(date +%s.%N)" -v t="$UPLOAD_TIMEOUT" 'BEGIN { exit !(now - s > t) }'; then
        grep -E "topic=\"$TIERED_TOPIC\"" "$WORK/metrics.ingest-after" | grep -E 'offset|upload_lag|segments' >&2 || true
        die "after ${UPLOAD_TIMEOUT} s: log end $log_end, remote log end $remote_end, local log start $local_start (expected all $RECORDS)"
    fi
    sleep 0.5
done
WAIT_S="$(calc %.1f "$(date +%s.%N) - $wait_start")"
WAIT_BROKER_CPU="$(calc %.2f "$(cpu "$BROKER_PID") - $wb0")"
WAIT_MOTO_CPU="$(calc %.2f "$(cpu "$MOTO_PID") - $wm0")"
WAIT_OTHER_CPU="$(other_cpu "$ws0" "$(machine_cpu)" "$WAIT_BROKER_CPU" "$WAIT_MOTO_CPU")"
log "fully tiered $WAIT_S s after the produce finished"
REMOTE_SEGMENTS="$(msum ingest-after strata_remote_segments topic="$TIERED_TOPIC")"
REMOTE_BYTES="$(msum ingest-after strata_remote_bytes topic="$TIERED_TOPIC")"
LOCAL_SEGMENTS="$(msum ingest-after strata_log_segments topic="$TIERED_TOPIC")"
LOCAL_BYTES="$(msum ingest-after strata_log_size_bytes topic="$TIERED_TOPIC")"
PUT_SIMPLE="$(mdelta ingest-before ingest-after strata_object_store_requests_total op=put topic="$TIERED_TOPIC")"
PUT_PART="$(mdelta ingest-before ingest-after strata_object_store_requests_total op=put_part topic="$TIERED_TOPIC")"
PUT_BYTES="$(( $(mdelta ingest-before ingest-after strata_object_store_bytes_total op=put topic="$TIERED_TOPIC") + $(mdelta ingest-before ingest-after strata_object_store_bytes_total op=put_part topic="$TIERED_TOPIC") ))"
ALL_REQUESTS_INGEST="$(mdelta ingest-before ingest-after strata_object_store_requests_total)"

# ---- 3. raw ranged GETs of the same objects from the same moto server ----
S3_GET_NAMES=()
for c in $S3_GET_CONCURRENCY; do
    step "s3-get-c$c" env AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
        "$BENCH" s3-get --name "s3-get-c$c" --endpoint "$S3_ENDPOINT" --bucket "$BUCKET" --region us-east-1 \
        --path-style --allow-http --contains "topics/$TIERED_TOPIC." --range-bytes "$CHUNK_BYTES" --concurrency "$c"
    S3_GET_NAMES+=("s3-get-c$c")
done

# ---- 4. cold replay: empty cache, everything from the bucket ----
restart_broker_cold
snapshot cold-before
step replay-cold "$BENCH" consume --bootstrap "$BOOTSTRAP" --name replay-cold --topic "$TIERED_TOPIC"
snapshot cold-after

# ---- 5. warm replay: the same again, the cache now holds it ----
step replay-warm "$BENCH" consume --bootstrap "$BOOTSTRAP" --name replay-warm --topic "$TIERED_TOPIC"
snapshot warm-after

# ---- 6. produce latency at a steady rate, idle ----
# The measured window lasts as long as the cold replay did (within E2E_MIN_SECONDS and
# E2E_MAX_SECONDS), so that in step 7 it falls within the replay, which runs slower under
# load than alone.
COLD_S="$(jget "${OUTFILE[replay-cold]}" seconds)"
E2E_WINDOW="$(awk -v c="$COLD_S" -v lo="$E2E_MIN_SECONDS" -v hi="$E2E_MAX_SECONDS" \
    'BEGIN { d = (c == "nan") ? lo : int(c + 0.999); if (d < lo) d = lo; if (d > hi) d = hi; print d }')"
E2E_SECONDS=$(( E2E_WINDOW + E2E_WARMUP ))
E2E_ARGS=(--partitions "$PARTITIONS" --record-size "$RECORD_SIZE" --acks all --rate "$E2E_RATE" --duration "$E2E_SECONDS" --warmup "$E2E_WARMUP")
step e2e-idle "$BENCH" e2e --bootstrap "$BOOTSTRAP" --name e2e-idle --topic "tier-e2e-idle-$RUN_ID" "${E2E_ARGS[@]}"

# e2e_with NAME LOAD_NAME LOAD_CMD...: an e2e run (E2E_ARGS, fresh topic) with LOAD_CMD
# started when its warm-up ends (e2e writes the time to --window-file then), so that the
# measured window and the load start together. CPU is over the whole step.
declare -A OVERLAP
e2e_with() {
    local name="$1" load="$2"; shift 2
    local e2e_out="$WORK/$name.out" load_out="$WORK/$load.out" window_file="$WORK/$name.window"
    local b0 m0 w0 s0 s1 w1 load_start load_end load_status=0 bg
    sync
    proc_cpu "$WORK/procs.before"
    b0="$(cpu "$BROKER_PID")"; m0="$(cpu "$MOTO_PID")"; s0="$(machine_cpu)"; w0="$(date +%s.%N)"
    local cmd=("$BENCH" e2e --bootstrap "$BOOTSTRAP" --name "$name" --topic "tier-$name-$RUN_ID" "${E2E_ARGS[@]}" --window-file "$window_file")
    COMMANDS+=("${cmd[*]#"$ROOT/"} &")
    (
        status=0
        run_client "$name" "$e2e_out" "${cmd[@]}" || status=$?
        echo "$status" >"$e2e_out.status"
    ) &
    bg=$!
    BG_PIDS+=("$bg")
    for _ in $(seq 1 1200); do
        [ -s "$window_file" ] && break
        kill -0 "$bg" 2>/dev/null || break
        sleep 0.05
    done
    [ -s "$window_file" ] || log "$name did not report the end of its warm-up; starting $load anyway"
    COMMANDS+=("# when the e2e warm-up is over (its --window-file appears):")
    load_start="$(date +%s.%N)"
    run_client "$load" "$load_out" "$@" || load_status=$?
    load_end="$(date +%s.%N)"
    wait "$bg" || true
    BG_PIDS=()
    w1="$(date +%s.%N)"
    WALL_S[$name]="$(calc %.2f "$w1 - $w0")"
    BROKER_CPU_S[$name]="$(calc %.2f "$(cpu "$BROKER_PID") - $b0")"
    MOTO_CPU_S[$name]="$(calc %.2f "$(cpu "$MOTO_PID") - $m0")"
    CLIENT_CPU_S[$name]="$(calc %.2f "$(client_cpu "$load_out") + $(client_cpu "$e2e_out")")"
    s1="$(machine_cpu)"
    proc_cpu "$WORK/procs.after"
    account "$name" "$s0" "$s1" "$WORK/procs.before" "$WORK/procs.after"
    finish "$name" "$e2e_out" "$(cat "$e2e_out.status" 2>/dev/null || echo 1)"
    finish "$load" "$load_out" "$load_status"
    WALL_S[$load]="$(calc %.2f "$load_end - $load_start")"
    # Share of the e2e run's measured window during which the load ran.
    OVERLAP[$name]="$(awk -v ws="$(jget "$e2e_out" window_unix.0)" -v we="$(jget "$e2e_out" window_unix.1)" \
        -v rs="$load_start" -v re="$load_end" 'BEGIN {
        if (ws == "nan" || we <= ws) { print "–"; exit }
        o = ((we < re ? we : re) - (ws > rs ? ws : rs)) / (we - ws)
        if (o < 0) o = 0
        printf "%.0f%%", 100 * o }')"
}

# ---- 7. the same while a cold replay runs ----
restart_broker_cold
snapshot load-before
e2e_with e2e-during-replay replay-cold-loaded "$BENCH" consume --bootstrap "$BOOTSTRAP" --name replay-cold-loaded --topic "$TIERED_TOPIC"
snapshot load-after

# ---- 8. control: the same while moto serves raw GETs to s3-get (moto busy, no replay) ----
e2e_with e2e-during-s3-get s3-get-loaded env AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
    "$BENCH" s3-get --name s3-get-loaded --endpoint "$S3_ENDPOINT" --bucket "$BUCKET" --region us-east-1 \
    --path-style --allow-http --contains "topics/$TIERED_TOPIC." --range-bytes "$CHUNK_BYTES" \
    --concurrency "$S3_LOAD_CONCURRENCY" --duration "$E2E_WINDOW"
RUN_SECONDS=$(( $(date +%s) - RUN_START ))

BROKER_RSS="$(awk '/^VmHWM/ { printf "%.0f MiB", $2 / 1024 }' "/proc/$BROKER_PID/status" 2>/dev/null || echo unknown)"
MOTO_RSS="$(awk '/^VmHWM/ { printf "%.0f MiB", $2 / 1024 }' "/proc/$MOTO_PID/status" 2>/dev/null || echo unknown)"
CACHE_SIZE="$(du -sh "$CACHE" 2>/dev/null | cut -f1)"
stop_broker
stop_pid "$MOTO_PID" moto; MOTO_PID=""
cat "$WORK"/strata.*.log | sed 's/\x1b\[[0-9;]*m//g' >"$WORK/strata.plain.log"
BROKER_PROBLEMS="$(grep -E '^[^ ]+ +(WARN|ERROR) ' "$WORK/strata.plain.log" || true)"
BROKER_LOG_LEVELS="$(awk '{ n[$2]++ } END { for (l in n) printf "%s%d %s", (s++ ? ", " : ""), n[l], l }' "$WORK/strata.plain.log")"
MOTO_ERRORS="$(grep -cE '" [45][0-9][0-9] ' "$WORK/moto.log" || true)"

# ---- the numbers ----
GIB=1073741824
INGEST_GIB="$(calc %.4f "$RECORDS * $RECORD_SIZE / $GIB")"
mib_s() { jget "${OUTFILE[$1]}" "${2:-mib_per_s}"; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "nan" || b == "nan" || b == 0) print "–"; else printf "%.0f%%", 100 * a / b }'; }
per_s_cpu() { awk -v c="$1" -v w="$2" 'BEGIN { if (c == "nan" || w == 0) print "–"; else printf "%.0f%%", 100 * c / w }'; }
f1() { awk -v v="$1" 'BEGIN { if (v == "nan" || v == "") print "–"; else printf "%.1f", v }'; }
f2() { awk -v v="$1" 'BEGIN { if (v == "nan" || v == "") print "–"; else printf "%.2f", v }'; }
COLD_GETS="$(mdelta cold-before cold-after strata_object_store_requests_total op=get topic="$TIERED_TOPIC")"
COLD_GET_BYTES="$(mdelta cold-before cold-after strata_object_store_bytes_total op=get topic="$TIERED_TOPIC")"
COLD_LOOKUPS="$(mdelta cold-before cold-after strata_remote_cache_lookups_total)"
COLD_MISSES="$(mdelta cold-before cold-after strata_remote_cache_misses_total)"
COLD_FETCHED="$(mdelta cold-before cold-after strata_remote_fetched_bytes_total)"
COLD_ALL_REQUESTS="$(mdelta cold-before cold-after strata_object_store_requests_total)"
WARM_GETS="$(mdelta cold-after warm-after strata_object_store_requests_total op=get topic="$TIERED_TOPIC")"
WARM_LOOKUPS="$(mdelta cold-after warm-after strata_remote_cache_lookups_total)"
WARM_MISSES="$(mdelta cold-after warm-after strata_remote_cache_misses_total)"
LOADED_GETS="$(mdelta load-before load-after strata_object_store_requests_total op=get topic="$TIERED_TOPIC")"
REPLAY_BYTES="$(jget "${OUTFILE[replay-cold]}" bytes)"
REPLAY_GIB="$(calc %.4f "$REPLAY_BYTES / $GIB")"
COLD="$(mib_s replay-cold)"
WARM="$(mib_s replay-warm)"
LOCAL="$(mib_s replay-local)"
BEST_GET="nan"; BEST_GET_NAME=""
for n in "${S3_GET_NAMES[@]}"; do
    v="$(mib_s "$n")"
    if [ "$BEST_GET" = "nan" ] || awk -v a="$v" -v b="$BEST_GET" 'BEGIN { exit !(a != "nan" && a > b) }'; then BEST_GET="$v"; BEST_GET_NAME="$n"; fi
done
lat() { # lat NAME FIELD: "p50 / p99 / p999" of a latency object
    local f="${OUTFILE[$1]}"
    echo "$(f2 "$(jget "$f" "$2.p50")") / $(f2 "$(jget "$f" "$2.p99")") / $(f2 "$(jget "$f" "$2.p999")") / $(f2 "$(jget "$f" "$2.max")")"
}
status_of() {
    local f="${OUTFILE[$1]:-}"
    [ -n "$f" ] || { echo "not run"; return; }
    if grep -q '"ok":true' "$f"; then echo ok; else echo "FAILED: $(jget "$f" error) $(jget "$f" first_error)"; fi
}
row() { # row LABEL NAME DATA_MIB_FIELD_NOTE: one throughput row
    local label="$1" name="$2" wall="${WALL_S[$2]:-0}"
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$label" "$(f1 "$(mib_s "$name")")" \
        "$(f1 "$(calc %.1f "$(jget "${OUTFILE[$name]}" bytes) / 1048576")")" "$(f2 "$(jget "${OUTFILE[$name]}" seconds)")" \
        "$(per_s_cpu "${BROKER_CPU_S[$name]:-nan}" "$wall")" "$(per_s_cpu "${MOTO_CPU_S[$name]:-nan}" "$wall")" \
        "$(per_s_cpu "${CLIENT_CPU_S[$name]:-nan}" "$wall")" "$(per_s_cpu "${KERNEL_CPU_S[$name]:-nan}" "$wall")" \
        "$(per_s_cpu "${OTHER_CPU_S[$name]:-nan}" "$wall")" "$(status_of "$name")"
}
log "results: local $LOCAL, cold $COLD, warm $WARM MiB/s; raw GET best $BEST_GET MiB/s ($BEST_GET_NAME)"

BUSY_STEPS="$(for n in "${!OTHER_CPU_S[@]}"; do
    awk -v n="$n" -v o="${OTHER_CPU_S[$n]}" -v w="${WALL_S[$n]:-0}" -v top="${OTHER_TOP[$n]:-}" \
        'BEGIN { if (w > 0 && o / w > 0.10) printf "%s (%.0f%% of a core; %s)\n", n, 100 * o / w, (top == "" ? "processes that exited meanwhile" : top) }'
done | sort | paste -sd ';' | sed 's/;/; /g')"
[ -z "$BUSY_STEPS" ] || log "other processes were busy during: $BUSY_STEPS"

NPROC="$(nproc)"
# How much more moto gave with the most GETs in flight than with the fewest.
SATURATION=""
if [ ${#S3_GET_NAMES[@]} -ge 2 ]; then
    lo="${S3_GET_NAMES[0]}"; hi="${S3_GET_NAMES[${#S3_GET_NAMES[@]}-1]}"
    SATURATION="$(awk -v a="$(mib_s "$lo")" -v b="$(mib_s "$hi")" -v ca="${lo#s3-get-c}" -v cb="${hi#s3-get-c}" \
        -v la="$(jget "${OUTFILE[$lo]}" get_latency_ms.p50)" -v lb="$(jget "${OUTFILE[$hi]}" get_latency_ms.p50)" 'BEGIN {
        if (a == "nan" || b == "nan" || a == 0) exit
        printf "Going from %s to %s GETs in flight changed its rate by %+.0f%% while the median GET\n  went from %.0f to %.0f ms: requests queue inside moto, it is saturated.", ca, cb, 100 * (b - a) / a, la, lb }')"
fi
CONTROL_SHARE="$(awk -v i="$(jget "${OUTFILE[e2e-idle]}" produce.ack_latency_ms.p99)" \
    -v r="$(jget "${OUTFILE[e2e-during-replay]}" produce.ack_latency_ms.p99)" \
    -v c="$(jget "${OUTFILE[e2e-during-s3-get]}" produce.ack_latency_ms.p99)" 'BEGIN {
    if (i == "nan" || r == "nan" || c == "nan" || r <= i) { print "an unknown share"; exit }
    printf "about %.0f%%", 100 * (c - i) / (r - i) }')"

# ---- the report section ----
COMMIT="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
CHANGED="$(git status --porcelain -- . ':!docs/benchmarks.md' 2>/dev/null | awk '{ print $NF }')"
if [ -n "$CHANGED" ]; then
    COMMIT="$COMMIT plus uncommitted changes to $(echo "$CHANGED" | head -n 8 | paste -sd ' ' | sed 's/ /, /g')$( [ "$(echo "$CHANGED" | wc -l)" -le 8 ] || echo ', ...')"
fi
CPU_MODEL="$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)"
[ -n "$CPU_MODEL" ] || CPU_MODEL="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
MEMORY="$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
SECTION="$WORK/section.md"
{
    cat <<EOF
<!-- tiering:begin (generated by bench/tiering.sh; rerun it to replace this section) -->
## Tiered storage

Generated by \`bench/tiering.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'), in one run on one
machine: one broker with tiered storage on a local moto S3 server, the data set written,
uploaded and dropped from local disk, then replayed. Do not edit by hand: rerun the
script, which replaces only this section. Method and caveats are below the numbers.

Data set: ${RECORDS} records of ${RECORD_SIZE} B ($(f1 "$(calc %.1f "$RECORDS * $RECORD_SIZE / 1048576")") MiB of values) in ${PARTITIONS} partitions,
\`segment.bytes\` ${SEGMENT_MIB} MiB, \`remote_chunk_bytes\` $(( CHUNK_BYTES / 1024 )) KiB, read-ahead 4 chunks (default).
Once uploaded: ${REMOTE_SEGMENTS} segments, $(f1 "$(calc %.1f "$REMOTE_BYTES / 1048576")") MiB in the bucket; ${LOCAL_SEGMENTS} local segments
holding ${LOCAL_BYTES} bytes (the empty active segments).

### Throughput

| scenario | MiB/s | MiB | seconds | broker CPU | moto CPU | client CPU | kernel threads | other processes | status |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---|
$(row "produce, topic without tiered storage" produce-local)
$(row "produce, tiered topic (uploads run alongside)" produce-tiered)
$(row "replay from the local tier (topic without tiered storage)" replay-local)
$(row "**cold replay** from the bucket (empty cache)" replay-cold)
$(row "**warm replay** (cache holds the data set)" replay-warm)
$(for n in "${S3_GET_NAMES[@]}"; do row "raw ranged GETs, $(jget "${OUTFILE[$n]}" concurrency) in flight (s3-get, no broker)" "$n"; done)
$(row "cold replay while producing ${E2E_RATE} MiB/s" replay-cold-loaded)
$(row "raw ranged GETs, ${S3_LOAD_CONCURRENCY} in flight, while producing ${E2E_RATE} MiB/s" s3-get-loaded)

MiB/s counts record values (2^20 bytes) for the Kafka clients and object bytes for
s3-get; seconds run from the first request to the last record (or response). CPU is
user + system time over the wall time of the command, 100% = one core of $(nproc). The rest
of the machine's CPU time meanwhile (/proc/stat minus broker, moto and clients) is split
into *kernel threads* (writeback of the data the step wrote, network softirqs: work done
for the step) and *other processes*: more than a few percent there means something else
was running (a build, another test) and the row is suspect. Each step starts with a
\`sync\`, so earlier steps' dirty pages are not written back during it.
After the tiered produce, the last segments were uploaded and the local copies deleted
within ${WAIT_S} s (this includes waiting up to \`segment.ms\` = ${SEGMENT_MS} ms for the
last, partly filled segment of each partition to roll; broker ${WAIT_BROKER_CPU} s, moto
${WAIT_MOTO_CPU} s and the rest of the machine, kernel threads included, ${WAIT_OTHER_CPU} s of CPU meanwhile).

Per ranged GET (s3-get), p50 / p99 / p999 / max in ms:
$(for n in "${S3_GET_NAMES[@]}"; do echo "- $(jget "${OUTFILE[$n]}" concurrency) in flight: $(lat "$n" get_latency_ms) ($(jget "${OUTFILE[$n]}" requests) GETs of up to $(( CHUNK_BYTES / 1024 )) KiB)"; done)

### Object-store requests

| | requests | per GiB | bytes |
|---|---:|---:|---:|
| ingest: PUT-equivalents for ${TIERED_TOPIC} (\`put\` ${PUT_SIMPLE} + \`put_part\` ${PUT_PART}) | $((PUT_SIMPLE + PUT_PART)) | $(f1 "$(calc %.2f "($PUT_SIMPLE + $PUT_PART) / $INGEST_GIB")") per GiB ingested | ${PUT_BYTES} |
| cold replay: GETs | ${COLD_GETS} | $(f1 "$(calc %.2f "$COLD_GETS / $REPLAY_GIB")") per GiB replayed | ${COLD_GET_BYTES} |
| warm replay: GETs | ${WARM_GETS} | $(f1 "$(calc %.2f "$WARM_GETS / $REPLAY_GIB")") per GiB replayed | – |
| cold replay under produce load: GETs | ${LOADED_GETS} | $(f1 "$(calc %.2f "$LOADED_GETS / $REPLAY_GIB")") per GiB replayed | – |

From \`strata_object_store_requests_total\` and \`strata_object_store_bytes_total\` on
/metrics, before and after each phase, for the tiered topic's label (\`put_part\` counts a
multipart upload's create, parts and complete; uploads of segments larger than
\`remote_upload_part_bytes\`, 16 MiB, are multipart). Every request of any kind during
ingest: ${ALL_REQUESTS_INGEST}; during the cold replay: ${COLD_ALL_REQUESTS}. Chunk cache, cold replay:
${COLD_LOOKUPS} lookups, ${COLD_MISSES} misses, ${COLD_FETCHED} bytes fetched; warm replay: ${WARM_LOOKUPS} lookups, ${WARM_MISSES} misses.
Per GiB ingested counts record values (${INGEST_GIB} GiB); per GiB replayed, the values
the cold replay returned ($(f2 "$REPLAY_GIB") GiB).

### Produce latency during a cold replay

\`strata-bench e2e\`: ${E2E_RATE} MiB/s of ${RECORD_SIZE} B records to a fresh ${PARTITIONS}-partition topic for ${E2E_SECONDS} s
(the first ${E2E_WARMUP} s left out, so ${E2E_WINDOW} s measured: as long as the cold replay took alone), acks=all,
with a consumer on the same topic: idle; with a cold replay of the data set starting when
the warm-up ended (broker restarted with an empty cache first); and, as a control, with
\`s3-get\` keeping ${S3_LOAD_CONCURRENCY} ranged GETs in flight against moto for the window instead (moto as
busy, the broker not replaying).

| | ack latency p50 / p99 / p999 / max (ms) | end-to-end p50 / p99 / p999 / max (ms) | load ran during | broker CPU | moto CPU | client CPU | kernel threads | other processes | status |
|---|---|---|---:|---:|---:|---:|---:|---:|---|
| idle | $(lat e2e-idle produce.ack_latency_ms) | $(lat e2e-idle e2e_latency_ms) | – | $(per_s_cpu "${BROKER_CPU_S[e2e-idle]}" "${WALL_S[e2e-idle]}") | $(per_s_cpu "${MOTO_CPU_S[e2e-idle]}" "${WALL_S[e2e-idle]}") | $(per_s_cpu "${CLIENT_CPU_S[e2e-idle]}" "${WALL_S[e2e-idle]}") | $(per_s_cpu "${KERNEL_CPU_S[e2e-idle]}" "${WALL_S[e2e-idle]}") | $(per_s_cpu "${OTHER_CPU_S[e2e-idle]}" "${WALL_S[e2e-idle]}") | $(status_of e2e-idle) |
| during a cold replay | $(lat e2e-during-replay produce.ack_latency_ms) | $(lat e2e-during-replay e2e_latency_ms) | ${OVERLAP[e2e-during-replay]} | $(per_s_cpu "${BROKER_CPU_S[e2e-during-replay]}" "${WALL_S[e2e-during-replay]}") | $(per_s_cpu "${MOTO_CPU_S[e2e-during-replay]}" "${WALL_S[e2e-during-replay]}") | $(per_s_cpu "${CLIENT_CPU_S[e2e-during-replay]}" "${WALL_S[e2e-during-replay]}") | $(per_s_cpu "${KERNEL_CPU_S[e2e-during-replay]}" "${WALL_S[e2e-during-replay]}") | $(per_s_cpu "${OTHER_CPU_S[e2e-during-replay]}" "${WALL_S[e2e-during-replay]}") | $(status_of e2e-during-replay) |
| during raw GETs (no replay) | $(lat e2e-during-s3-get produce.ack_latency_ms) | $(lat e2e-during-s3-get e2e_latency_ms) | ${OVERLAP[e2e-during-s3-get]} | $(per_s_cpu "${BROKER_CPU_S[e2e-during-s3-get]}" "${WALL_S[e2e-during-s3-get]}") | $(per_s_cpu "${MOTO_CPU_S[e2e-during-s3-get]}" "${WALL_S[e2e-during-s3-get]}") | $(per_s_cpu "${CLIENT_CPU_S[e2e-during-s3-get]}" "${WALL_S[e2e-during-s3-get]}") | $(per_s_cpu "${KERNEL_CPU_S[e2e-during-s3-get]}" "${WALL_S[e2e-during-s3-get]}") | $(per_s_cpu "${OTHER_CPU_S[e2e-during-s3-get]}" "${WALL_S[e2e-during-s3-get]}") | $(status_of e2e-during-s3-get) |

"Load ran during" is the share of the measured window the replay (or s3-get) covered.
CPU is over the whole step (e2e set-up, warm-up, window, and the load), so it
understates the load's share while it ran. Under load, the replay took
${WALL_S[replay-cold-loaded]} s ($(f1 "$(mib_s replay-cold-loaded)") MiB/s, ${LOADED_GETS} GETs); s3-get received $(f1 "$(mib_s s3-get-loaded)") MiB/s. The e2e
producer fell at most $(f1 "$(jget "${OUTFILE[e2e-idle]}" produce.max_schedule_lag_ms)") ms (idle), $(f1 "$(jget "${OUTFILE[e2e-during-replay]}" produce.max_schedule_lag_ms)") ms (replay) and
$(f1 "$(jget "${OUTFILE[e2e-during-s3-get]}" produce.max_schedule_lag_ms)") ms (raw GETs) behind its send schedule (its sending thread was late by that much: waiting
for a CPU, or for room in librdkafka's queue).

### Reading

- Cold replay ran at $(f1 "$COLD") MiB/s: $(pct "$COLD" "$BEST_GET") of the best raw ranged-GET rate
  of the same moto server ($(f1 "$BEST_GET") MiB/s, ${BEST_GET_NAME#s3-get-c} in flight), with moto at
  $(per_s_cpu "${MOTO_CPU_S[replay-cold]}" "${WALL_S[replay-cold]}") of a core and the broker at $(per_s_cpu "${BROKER_CPU_S[replay-cold]}" "${WALL_S[replay-cold]}").
  moto is a single Python process (one interpreter lock: its Python code runs on one
  core at a time, and only system calls and copies outside the lock take it past 100%),
  and for every ranged GET it reads and copies the whole object before slicing the
  range (moto 5.x \`FakeKey.value\`): a ${CHUNK_BYTES}-byte GET of a ${SEGMENT_MIB} MiB segment moves about
  $(( SEGMENT_MIB * 1048576 / CHUNK_BYTES ))× the bytes it returns inside moto. ${SATURATION} The raw GET figure is therefore
  moto's ceiling on this machine, not S3's, and the cold replay figure says how close the
  broker's remote read path gets to its store, not what it would do against S3.
- Warm replay ran at $(f1 "$WARM") MiB/s against $(f1 "$LOCAL") MiB/s from the local tier ($(pct "$WARM" "$LOCAL")), with
  ${WARM_GETS} GETs (${WARM_MISSES} of ${WARM_LOOKUPS} chunk lookups missed the cache).
- Ingest cost $(f1 "$(calc %.2f "($PUT_SIMPLE + $PUT_PART) / $INGEST_GIB")") PUT-equivalents per GiB; a cold replay
  $(f1 "$(calc %.2f "$COLD_GETS / $REPLAY_GIB")") GETs per GiB (one per $(( CHUNK_BYTES / 1024 )) KiB chunk would be $(calc %.0f "$GIB / $CHUNK_BYTES")).
- At ${E2E_RATE} MiB/s, the p99 acknowledgement latency went from $(f2 "$(jget "${OUTFILE[e2e-idle]}" produce.ack_latency_ms.p99)") ms idle to
  $(f2 "$(jget "${OUTFILE[e2e-during-replay]}" produce.ack_latency_ms.p99)") ms during the cold replay (end-to-end p99 $(f2 "$(jget "${OUTFILE[e2e-idle]}" e2e_latency_ms.p99)") → $(f2 "$(jget "${OUTFILE[e2e-during-replay]}" e2e_latency_ms.p99)") ms),
  and to $(f2 "$(jget "${OUTFILE[e2e-during-s3-get]}" produce.ack_latency_ms.p99)") ms while moto served raw GETs with no replay in the broker (end-to-end
  $(f2 "$(jget "${OUTFILE[e2e-during-s3-get]}" e2e_latency_ms.p99)") ms), on a machine where moto, the broker and two clients share $(nproc) cores.
  The control (moto as busy, no replay in the broker) accounts for ${CONTROL_SHARE} of the rise
  in p99: that part is moto taking CPU from everyone on a ${NPROC}-core machine (in the
  control the e2e producer's own thread fell up to $(f1 "$(jget "${OUTFILE[e2e-during-s3-get]}" produce.max_schedule_lag_ms)") ms behind its schedule), not
  the broker; the rest comes with the replay itself (the broker's remote reads and the
  replay consumer, also on these cores).

### Machine and commands

| | |
|---|---|
| CPU | ${CPU_MODEL} |
| cores (nproc) | $(nproc) |
| memory | ${MEMORY} |
| kernel | $(uname -sr) |
| S3 | moto ${MOTO_VERSION} (\`moto_server\`, in-memory, Python $(python3 -c 'import platform; print(platform.python_version())')) on loopback |
| strata commit | ${COMMIT} |
| toolchain | $(rustc --version), release profile |

\`\`\`
bench/tiering.sh
\`\`\`

with DATA_MIB=${DATA_MIB} RECORD_SIZE=${RECORD_SIZE} PARTITIONS=${PARTITIONS} SEGMENT_MIB=${SEGMENT_MIB} CHUNK_BYTES=${CHUNK_BYTES}
S3_GET_CONCURRENCY="${S3_GET_CONCURRENCY}" E2E_RATE=${E2E_RATE} (the defaults unless set), which ran (ports and
temporary directories are picked afresh each run; scenarios took ${RUN_SECONDS} s in all):

\`\`\`
${MOTO_CMD[*]}
curl -X PUT ${S3_ENDPOINT}/${BUCKET}
${BROKER_ENV[*]} \\
  ${BROKER_CMD[*]#"$ROOT/"}
$(printf '%s\n' "${COMMANDS[@]}")
\`\`\`

The broker was restarted, with the same command and an emptied cache directory, before
the cold replay and before the replay under load. Broker peak RSS at the end: ${BROKER_RSS};
moto peak RSS: ${MOTO_RSS}; disk cache directory at the end: ${CACHE_SIZE}.
EOF
    printf '\nBroker log: %s lines over %s starts (%s). moto answered %s requests with a 4xx/5xx status.\n' \
        "$(wc -l <"$WORK/strata.plain.log")" "$BROKER_STARTS" "$BROKER_LOG_LEVELS" "${MOTO_ERRORS:-0}"
    if [ -n "$BROKER_PROBLEMS" ]; then
        printf '\nBroker log warnings and errors (%s lines, first 20):\n\n```\n%s\n```\n' \
            "$(printf '%s\n' "$BROKER_PROBLEMS" | wc -l)" "$(printf '%s\n' "$BROKER_PROBLEMS" | head -n 20)"
    else
        printf 'The broker logged no warnings or errors.\n'
    fi
    if [ ${#FAILED[@]} -gt 0 ]; then
        printf '\n**Failed steps: %s.** Their rows show the error.\n' "${FAILED[*]}"
    fi
    if [ -n "$BUSY_STEPS" ]; then
        printf '\n**Other processes used more than 10%% of a core during: %s.** Those rows\nmeasure a shared machine; rerun when it is quiet.\n' "$BUSY_STEPS"
    else
        printf '\nNo step saw other processes use more than 10%% of a core.\n'
    fi
    cat <<'EOF'

### Method

- *Set-up*: `moto_server` on 127.0.0.1 with one bucket; the broker with
  `object_store = s3://BUCKET` on it (path-style, plain HTTP, static test credentials),
  `remote_storage_enable`, the uploader every 200 ms, the disk cache sized to hold the
  data set twice. Everything else is the broker's default, as in bench/run.sh.
- *Local tier*: the data set is produced to a topic with `remote.storage.enable=false`
  and read back at once (from the page cache, as in bench/run.sh), then deleted.
- *Ingest*: the same data set is produced to a tiered topic with the same
  `segment.bytes`, `local.retention.bytes=0` (a segment leaves local disk as soon as its
  upload commits) and a short `segment.ms` (so the last segment rolls and is uploaded
  too). The script then polls /metrics until, for every partition,
  `strata_remote_log_end_offset` = `strata_local_log_start_offset` = `strata_log_end_offset`
  = what was produced: all of it is in the bucket and none of it on local disk.
- *Raw GETs*: `strata-bench s3-get` lists the topic's segment objects (keys containing
  `topics/<topic>.` and ending in `.segment`) and GETs them in
  `remote_chunk_bytes` ranges, key order, each object front to back, with N requests in
  flight, through the `object_store` crate's S3 client (what the broker uses). The
  broker is idle meanwhile.
- *Cold replay*: the broker is restarted with an empty cache directory, then
  `strata-bench consume` reads the topic from offset 0 (assign at the log start, no
  group, offsets checked for gaps and duplicates, as in bench/run.sh). Every byte comes
  from the bucket through the chunk cache: per partition, the chunk a fetch needs plus
  4 chunks of read-ahead (at most 8 read-ahead GETs in flight in the broker).
- *Warm replay*: the same consume again, straight after.
- *Requests*: deltas of the object-store counters on /metrics around each phase.
- *Latency under replay*: `strata-bench e2e` at a steady rate (the producer sleeps
  between records; its consumer reads the same topic), first alone, then again after
  another restart with an empty cache, with a cold replay that starts when the e2e
  warm-up ends (`--window-file`). The measured window lasts as long as the cold replay
  did alone (at least 5 s, at most 60 s by default), so it falls within the replay,
  which runs slower under load; the share it actually overlapped is reported. The
  control runs the same e2e with `s3-get --duration` (the window's length) as the
  load instead: moto equally busy, the broker serving only the e2e topic.

**Caveats.**
- moto is the object store here, and it is slow in ways S3 is not (see Reading): one
  Python process under one interpreter lock, a whole-object read and copy per ranged
  GET, objects in temporary files. Cold-replay and upload numbers measure the broker *with moto*,
  and moto takes a core the broker and clients would otherwise have: on this 2-core
  machine moto, the broker and one or two librdkafka clients compete for CPU in every
  tiered scenario. Compare the cold replay with the raw GET rows, not with S3.
- Loopback only: no network latency (S3 first-byte latency is tens of ms) and no
  bandwidth limit. Against real S3 more requests in flight would be needed to reach
  the same throughput; the broker's read-ahead depth is what bounds that.
- The page cache holds everything (the local topic, moto's temporary files, the disk
  cache's file): "warm" and "local" replays read memory, not the disk.
- One run of each scenario, and moto's speed varies from run to run on this virtual
  machine. In five development runs of this script with the default sizes
  (2026-11-22, some beside another developer's builds), the cold replay ranged from 79
  to 139 MiB/s, the best raw GET rate from 97 to 180 MiB/s, the cold replay's share of
  it from 63% to 103%, warm replay from 406 to 651 MiB/s, and the p99 acknowledgement
  latency during a cold replay from 37 to 110 ms. Compare rows within one run; read
  any single figure to within that spread.
<!-- tiering:end -->
EOF
} >"$SECTION"

mkdir -p "$(dirname "$OUT")"
write_section tiering "$SECTION"
if [ ${#FAILED[@]} -gt 0 ]; then
    log "failed steps: ${FAILED[*]}"
    exit 1
fi

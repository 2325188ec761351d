#!/usr/bin/env bash
# Standard Strata benchmark: builds strata and strata-bench (release), starts one local
# broker on loopback (free ports, temp data dir, embedded metadata, default flush policy),
# runs the standard scenarios, stops the broker by PID and writes docs/benchmarks.md.
#
#   bench/run.sh                 # full run: about 2 minutes after the build on 2 cores
#   OUT=/tmp/b.md bench/run.sh   # write the report elsewhere
#
# Sizes can be scaled down for a smoke run: RECORDS_1K, RECORDS_100B, REPEAT (runs of
# each throughput scenario), E2E_SECONDS, E2E_RATE (MiB/s), MAX_SECONDS (cap on each
# produce run). Not part of the test suite: it asserts nothing about timings; a failed
# scenario is reported in the table. The page's "Tiered storage" section comes from
# bench/tiering.sh (run it on its own); this script keeps it as it is.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-$ROOT/docs/benchmarks.md}"
RECORDS_1K="${RECORDS_1K:-2000000}"       # 1 KiB records per 1 KiB run (~1.9 GiB)
RECORDS_100B="${RECORDS_100B:-10000000}"  # 100 B records per run (~954 MiB)
REPEAT="${REPEAT:-3}"                      # runs of each throughput scenario; the table shows the median
E2E_SECONDS="${E2E_SECONDS:-30}"
E2E_RATE="${E2E_RATE:-20}"
MAX_SECONDS="${MAX_SECONDS:-60}"           # no produce run lasts longer than this

SCRIPT=run.sh
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

log "building strata and strata-bench (release)"
cargo build --release -p strata-broker
cargo build --release -p strata-bench
STRATA="$ROOT/target/release/strata"
BENCH="$ROOT/target/release/strata-bench"

WORK="$(mktemp -d -t strata-bench.XXXXXX)"
DATA="$WORK/data"
RESULTS="$WORK/results.jsonl"
cleanup() {
    stop_broker
    rm -rf "$WORK"
}
trap cleanup EXIT


KAFKA_PORT="$(free_port)"
HTTP_PORT="$(free_port)"
while [ "$HTTP_PORT" = "$KAFKA_PORT" ]; do HTTP_PORT="$(free_port)"; done
BOOTSTRAP="127.0.0.1:$KAFKA_PORT"

BROKER_CMD=("$STRATA" serve --listen "$BOOTSTRAP" --http "127.0.0.1:$HTTP_PORT" --data-dir "$DATA" --metadata embedded)
BROKER_ENV=()
start_broker

# CPU seconds the broker has used so far.
broker_cpu() { cpu "$BROKER_PID"; }

COMMANDS=()
declare -A WALL_S BROKER_CPU_S CLIENT_CPU_S
SCENARIOS=()
RUNS=0
TIME_CMD=()
if [ -x /usr/bin/time ]; then TIME_CMD=(/usr/bin/time -f '%U %S' -o "$WORK/client-cpu"); fi
RUN_START=$(date +%s)
# bench NAME ARGS...: one strata-bench run, bounded in time; its JSON line goes to RESULTS.
bench() {
    local name="$1"; shift
    if ! kill -0 "$BROKER_PID" 2>/dev/null; then
        log "$name: skipped, the broker is gone"
        echo "{\"mode\":\"$1\",\"name\":\"$name\",\"ok\":false,\"error\":\"skipped: broker not running\"}" >>"$RESULTS"
        return 0
    fi
    local cmd=("$BENCH" "$@" --bootstrap "$BOOTSTRAP" --name "$name")
    # The report lists each scenario's command once; repetitions differ only in the topic.
    [ -n "${WALL_S[$name]:-}" ] || COMMANDS+=("${cmd[*]#"$ROOT/"}")
    log "$name: ${cmd[*]}"
    RUNS=$((RUNS + 1))
    local out="$WORK/$name.$RUNS.out" cpu_before wall_before status=0
    rm -f "$WORK/client-cpu"
    cpu_before="$(broker_cpu)"; wall_before="$(date +%s.%N)"
    "${TIME_CMD[@]}" timeout -k 10 300 "${cmd[@]}" >"$out" 2>"$out.err" || status=$?
    local cpu_after wall_after client_cpu="nan"
    cpu_after="$(broker_cpu)"; wall_after="$(date +%s.%N)"
    if [ -s "$WORK/client-cpu" ]; then client_cpu="$(awk 'END { print $1 + $2 }' "$WORK/client-cpu")"; fi
    cat "$out" >&2
    if [ -s "$out.err" ]; then sed 's/^/    stderr: /' "$out.err" | head -20 >&2; fi
    if grep -q '^{' "$out"; then
        grep '^{' "$out" | tail -n 1 >>"$RESULTS"
    else
        echo "{\"mode\":\"$1\",\"name\":\"$name\",\"ok\":false,\"error\":\"exit status $status, no result line\"}" >>"$RESULTS"
    fi
    [ "$status" -eq 0 ] || log "$name: exit status $status"
    [ -n "${WALL_S[$name]:-}" ] || SCENARIOS+=("$name")
    WALL_S[$name]="$(awk -v a="${WALL_S[$name]:-0}" -v w0="$wall_before" -v w1="$wall_after" 'BEGIN { print a + w1 - w0 }')"
    BROKER_CPU_S[$name]="$(awk -v a="${BROKER_CPU_S[$name]:-0}" -v c0="$cpu_before" -v c1="$cpu_after" 'BEGIN { print a + c1 - c0 }')"
    CLIENT_CPU_S[$name]="$(awk -v a="${CLIENT_CPU_S[$name]:-0}" -v c="$client_cpu" 'BEGIN { print a + c }')"
}

# Deleting each topic once read keeps the data dir and the page cache from growing run
# after run (on a VM, page cache in never-touched guest memory makes writes much slower).
delete_topic() {
    kill -0 "$BROKER_PID" 2>/dev/null || return 0
    local cmd=("$BENCH" delete-topics --bootstrap "$BOOTSTRAP" "$1")
    [ -n "${DELETE_LISTED:-}" ] || { COMMANDS+=("${cmd[*]#"$ROOT/"}"); DELETE_LISTED=1; }
    timeout 60 "${cmd[@]}" || log "could not delete topic $1"
}

RUN_ID="$(date +%s)"
for run in $(seq 1 "$REPEAT"); do
    # 1 KiB records, acks=all, 1 partition: produce, then read it all back.
    topic="bench-1k-p1-$RUN_ID-$run"
    bench produce-1k-p1 produce --topic "$topic" --partitions 1 --record-size 1024 --acks all \
        --records "$RECORDS_1K" --duration "$MAX_SECONDS"
    bench consume-1k-p1 consume --topic "$topic"
    delete_topic "$topic"
    # 1 KiB records, acks=all, 8 partitions.
    topic="bench-1k-p8-$RUN_ID-$run"
    bench produce-1k-p8 produce --topic "$topic" --partitions 8 --record-size 1024 --acks all \
        --records "$RECORDS_1K" --duration "$MAX_SECONDS"
    bench consume-1k-p8 consume --topic "$topic"
    delete_topic "$topic"
    # 100 B records, acks=all, 8 partitions.
    topic="bench-100b-p8-$RUN_ID-$run"
    bench produce-100b-p8 produce --topic "$topic" --partitions 8 --record-size 100 --acks all \
        --records "$RECORDS_100B" --duration "$MAX_SECONDS"
    bench consume-100b-p8 consume --topic "$topic"
    delete_topic "$topic"
done
# Steady-rate end-to-end latency: 1 KiB records at E2E_RATE MiB/s.
bench e2e-1k-p8 e2e --topic "bench-e2e-1k-p8-$RUN_ID" --partitions 8 --record-size 1024 --acks all \
    --rate "$E2E_RATE" --duration "$E2E_SECONDS" --warmup 5
RUN_SECONDS=$(( $(date +%s) - RUN_START ))

DATA_SIZE="$(du -sh "$DATA" 2>/dev/null | cut -f1)"
BROKER_RSS="$(awk '/^VmHWM/ { printf "%.0f MiB", $2 / 1024 }' "/proc/$BROKER_PID/status" 2>/dev/null || echo "unknown")"
log "stopping broker $BROKER_PID"
stop_broker
sed 's/\x1b\[[0-9;]*m//g' "$WORK/strata.1.log" >"$WORK/strata.plain.log"
BROKER_PROBLEMS="$(grep -E '^[^ ]+ +(WARN|ERROR) ' "$WORK/strata.plain.log" || true)"
BROKER_LOG_LEVELS="$(awk '{ n[$2]++ } END { for (l in n) printf "%s%d %s", (s++ ? ", " : ""), n[l], l }' "$WORK/strata.plain.log")"

# ---- the report ----
COMMIT="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
# This report itself is always about to change; anything else uncommitted is named.
CHANGED="$(git status --porcelain -- . ':!docs/benchmarks.md' 2>/dev/null | awk '{ print $NF }')"
if [ -n "$CHANGED" ]; then
    COMMIT="$COMMIT plus uncommitted changes to $(echo "$CHANGED" | head -n 6 | paste -sd ' ' | sed 's/ /, /g')$( [ "$(echo "$CHANGED" | wc -l)" -le 6 ] || echo ', ...')"
fi
CPU_MODEL="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
MEMORY="$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
DISK_FREE="$(df -h "$WORK" | awk 'NR == 2 { print $4 " free of " $2 " on " $1 }')"
RUSTC="$(rustc --version)"
mkdir -p "$(dirname "$OUT")"
# The sections the other scripts write (tiering, compaction, replication, tracing: from
# the first "<!-- NAME:begin" marker to the end) are carried over unchanged.
OTHER_SECTIONS=""
if [ -f "$OUT" ]; then
    OTHER_SECTIONS="$(awk '/^<!-- [a-z]+:begin/ { keep = 1 } keep { print }' "$OUT")"
fi
{
    cat <<EOF
# Benchmarks

Generated by \`bench/run.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'). Do not edit by hand: rerun
the script. The Method section below is part of the script. The sections after it come
from \`bench/tiering.sh\`, \`bench/compaction.sh\`, \`bench/cluster.sh\` and
\`bench/tracing.sh\`, each rewriting only its own.

## Results

$("$BENCH" table "$RESULTS")

Throughput scenarios ran ${REPEAT} times each, in turn; MiB/s is the median run with the
range in brackets, and the other columns come from that median run. MiB/s counts record
values only (2^20 bytes; no keys, headers or batch overhead). Produce throughput runs
from the first send to the last acknowledgement; consume throughput from assign() to
the last record. "–" means not applicable.

Where the CPU went, summed over the runs of each scenario (user + system time; the
machine has $(nproc) cores, so 100% is one core busy the whole time):

| scenario | wall s | broker CPU s | broker CPU | client CPU s | client CPU |
|---|---:|---:|---:|---:|---:|
$(for name in "${SCENARIOS[@]}"; do
    awk -v n="$name" -v w="${WALL_S[$name]}" -v b="${BROKER_CPU_S[$name]}" -v c="${CLIENT_CPU_S[$name]}" \
        'BEGIN { printf "| %s | %.1f | %.1f | %.0f%% | %.1f | %.0f%% |\n", n, w, b, 100 * b / w, c, 100 * c / w }'
done)

<details><summary>Every run</summary>

$("$BENCH" table --runs "$RESULTS")

</details>

Scenarios took ${RUN_SECONDS} s in all. Data directory at the end (throughput topics deleted): ${DATA_SIZE}. Broker peak RSS: ${BROKER_RSS}.

## Machine

| | |
|---|---|
| CPU | ${CPU_MODEL} |
| cores (nproc) | $(nproc) |
| memory | ${MEMORY} |
| kernel | $(uname -sr) |
| disk | ${DISK_FREE} (data dir in \`${TMPDIR:-/tmp}\`) |
| strata commit | ${COMMIT} |
| toolchain | ${RUSTC}, release profile |
| client | strata-bench on librdkafka (rdkafka crate, bundled librdkafka) |

## Commands

\`\`\`
bench/run.sh
\`\`\`

which ran the following, each throughput scenario ${REPEAT} times with topic suffixes
-1 to -${REPEAT} (ports are picked afresh each run):

\`\`\`
${BROKER_CMD[*]#"$ROOT/"}
$(printf '%s\n' "${COMMANDS[@]}")
\`\`\`

EOF
    printf 'Broker log: %s lines (%s).\n\n' "$(wc -l <"$WORK/strata.plain.log")" "$BROKER_LOG_LEVELS"
    if [ -n "$BROKER_PROBLEMS" ]; then
        printf 'Broker log warnings and errors (%s lines, first 20):\n\n```\n%s\n```\n\n' \
            "$(printf '%s\n' "$BROKER_PROBLEMS" | wc -l)" "$(printf '%s\n' "$BROKER_PROBLEMS" | head -n 20)"
    else
        printf 'The broker logged no warnings or errors.\n\n'
    fi
    cat <<'EOF'
## Method

**What is measured.** `strata-bench` (bench/src) drives the broker through librdkafka
(the rdkafka crate with its bundled librdkafka), the client library most Kafka users
run on, with stock settings except where named. Producer: `linger.ms=5`,
`batch.size=1000000`, no compression, `enable.idempotence=false` (kept from the runs
before InitProducerId existed, so numbers stay comparable); records have no key and use librdkafka's sticky partitioner
(fill a batch for one partition, then move to the next), as keyless clients do.
Payloads are pseudo-random lower-case letters.

- *Produce throughput*: one producer sends as fast as librdkafka accepts (its queue
  holds up to 100 000 records; a full queue makes the sender wait 1 ms), for a fixed
  record count or at most `MAX_SECONDS`. The clock runs from the first send to the
  last acknowledgement. acks=all on one broker means the leader appended the batch;
  with the default flush policy (`flush.ms` 1000, no `flush.messages`) that is before
  fsync, which the broker's flusher does about once a second.
- *Acknowledgement latency*: send() to delivery report, per record, timed on
  librdkafka's polling thread. In the unthrottled runs it is mostly time queued in the
  client behind earlier records: it shows queue depth, not broker service time. The
  steady-rate run is the one that shows latency.
- *Consume throughput*: a fresh consumer assign()s every partition at its log start
  offset and reads everything below the high watermarks, checking that offsets on each
  partition are dense (a gap or duplicate fails the row). No consumer group: the
  broker has no group coordinator yet, so there is no subscribe() and no commit
  (`enable.auto.commit=false`; librdkafka's assign() still wants a `group.id`, which is
  set but never used). One client setting is changed: `fetch.queue.backoff.ms=10`
  (default 1000). librdkafka stops fetching for that long whenever its local queue
  holds more than `queued.min.messages` (100 000) or `queued.max.messages.kbytes`
  (64 MiB); with the default, this consumer drained its queue in about 0.1 s and then
  idled for the rest of the second, which measured the client's back-off (about
  25 MiB/s for 100-byte records) instead of the broker.
- *End-to-end latency*: a producer at a steady rate and a consumer on every partition
  in one process. The producer sleeps (it does not spin) until each record is due and
  stamps the payload with the send time from a monotonic clock; the consumer records
  receive minus send. Producing starts once the consumer's fetchers have reached the
  end of every partition, and the first 5 s are left out as warm-up. The consumer
  keeps librdkafka's `fetch.wait.max.ms=500` and `fetch.min.bytes=1`, so these numbers
  depend on the broker answering a waiting fetch as soon as data arrives.
- *CPU*: broker utime + stime from /proc/PID/stat before and after each command; the
  client's from `/usr/bin/time`.

Throughput scenarios run `REPEAT` times (3 by default), interleaved, and each topic is
deleted once it has been read. Percentiles come from HdrHistogram (microsecond
resolution, 3 significant digits).

**Caveats.**
- Client and broker share the machine's 2 cores, and the client is the heavier of the
  two: librdkafka spends more CPU producing and consuming than the broker spends
  storing and serving (see the CPU table). The throughput figures are therefore what
  this machine does with both on it, a floor for the broker rather than its capacity.
  In the 1 KiB produce runs the two together still leave the machine about a quarter
  idle (/proc/stat during a 1-partition run: 1.4 of 2 cores busy), so there the
  pipeline (one connection, requests answered in order, 1 MB batches) limits as much as
  CPU does.
  Spreading keyless records round-robin record by record instead of the sticky default
  (`--partitioner round-robin`) doubles the producer's CPU and cut 8-partition produce
  throughput by about a quarter in trials.
- Everything is on loopback: no network latency or bandwidth limit, no TLS.
- The page cache: a run's data (about 2 GiB at most) fits in memory, so consumers read
  from the page cache, not the disk, and producers never wait for the disk (fsync is
  off the acknowledgement path with the default flush policy). With less free memory,
  or with `flush.messages=1`, numbers would be lower.
- This is a virtual machine. Writing into page cache backed by guest memory that had
  never been touched cost the broker about 1.8 ms per 1 MB write() in trials (strace;
  the host faulting the memory in), against 0.2 ms otherwise; a series of runs that let
  the page cache grow to 11 GiB fell from about 480 to 270 MiB/s on 1 partition, with
  the broker's system time up sevenfold. Deleting each topic after use keeps the
  footprint flat. Even so, runs of the same scenario differ by up to about 25% (see the
  ranges and the per-run table): read the table to within that.
- Fresh topics with one segment each: retention, segment rolls (1 GiB) and tiered
  storage are not exercised here (tiered storage: see the next section).
EOF
    if [ -n "$OTHER_SECTIONS" ]; then
        printf '\n%s\n' "$OTHER_SECTIONS"
    fi
} >"$OUT"
log "wrote $OUT"

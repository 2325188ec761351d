#!/usr/bin/env bash
# Tracing overhead benchmark: one broker (embedded metadata, loopback, default flush
# policy) with OpenTelemetry export off, at the default sample ratio (0.01) and at 1.0,
# exporting to an OTLP sink on loopback (bench/otlp_sink.py, which only counts). Each
# repetition runs every mode in turn on a fresh broker: a 1 KiB acks=all produce and
# its read-back over 8 partitions, then a steady-rate end-to-end run. Writes the
# "Tracing overhead" section of docs/benchmarks.md.
#
#   bench/tracing.sh                                  # about 4 minutes after the build
#   RECORDS=200000 REPEAT=1 OUT=/tmp/t.md bench/tracing.sh   # smoke run
#
# Knobs: RECORDS (1 KiB records per produce run, 1000000), REPEAT (3), E2E_SECONDS (15),
# E2E_RATE (MiB/s, 20). Needs grpcio and opentelemetry-proto (tests/requirements.txt).
# Asserts nothing about timings.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-$ROOT/docs/benchmarks.md}"
RECORDS="${RECORDS:-1000000}"
REPEAT="${REPEAT:-3}"
E2E_SECONDS="${E2E_SECONDS:-15}"
E2E_RATE="${E2E_RATE:-20}"

SCRIPT=tracing.sh
WORK="$(mktemp -d -t strata-tracing-bench.XXXXXX)"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
python3 -c 'import grpc, opentelemetry.proto' 2>/dev/null \
    || die "grpcio and opentelemetry-proto are needed: pip install -r tests/requirements.txt"

log "building strata and strata-bench (release)"
cargo build --release -p strata-broker
cargo build --release -p strata-bench
STRATA="$ROOT/target/release/strata"
BENCH="$ROOT/target/release/strata-bench"

SINK_PID=""
cleanup() {
    stop_broker
    stop_pid "$SINK_PID" "OTLP sink"
    rm -rf "$WORK"
}
trap cleanup EXIT

RESULTS="$WORK/results.jsonl"
# measure MODE RUN NAME ARGS...: one strata-bench run; its result line goes to RESULTS
# with the mode, the run and the broker's CPU seconds and the wall seconds it took.
measure() {
    local mode="$1" run="$2" name="$3"; shift 3
    local out="$WORK/$mode.$run.$name.out" cpu0 cpu1 wall0 wall1 status=0
    cpu0="$(cpu "$BROKER_PID")"; wall0="$(date +%s.%N)"
    timeout -k 10 300 "$BENCH" "$@" --bootstrap "$BOOTSTRAP" --name "$name" >"$out" 2>"$out.err" || status=$?
    cpu1="$(cpu "$BROKER_PID")"; wall1="$(date +%s.%N)"
    [ "$status" -eq 0 ] || { log "$mode $name: exit status $status"; sed 's/^/    /' "$out.err" | tail -n 5 >&2; }
    python3 - "$out" "$mode" "$run" "$cpu0" "$cpu1" "$wall0" "$wall1" "$name" >>"$RESULTS" <<'EOF'
import json, sys
out, mode, run, cpu0, cpu1, wall0, wall1, name = sys.argv[1:]
lines = [l for l in open(out) if l.startswith('{')]
result = json.loads(lines[-1]) if lines else {"name": name, "ok": False, "error": "no result line"}
result.update(trace_mode=mode, run=int(run), broker_cpu_s=float(cpu1) - float(cpu0),
              wall_s=float(wall1) - float(wall0))
print(json.dumps(result))
EOF
}

declare -A RATIO=([off]="" [sampled]="0.01" [all]="1.0")
MODES=(off sampled all)
for run in $(seq 1 "$REPEAT"); do
    for mode in "${MODES[@]}"; do
        KAFKA_PORT="$(free_port)"; HTTP_PORT="$(free_port)"; ADMIN_PORT="$(free_port)"
        BOOTSTRAP="127.0.0.1:$KAFKA_PORT"
        BROKER_CMD=("$STRATA" serve --listen "$BOOTSTRAP" --http "127.0.0.1:$HTTP_PORT"
            --admin-listen "127.0.0.1:$ADMIN_PORT" --data-dir "$WORK/data" --metadata embedded)
        BROKER_ENV=()
        if [ -n "${RATIO[$mode]}" ]; then
            SINK_PORT="$(free_port)"
            python3 "$ROOT/bench/otlp_sink.py" "$SINK_PORT" "$WORK/sink.$mode.$run.json" &
            SINK_PID=$!
            for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$SINK_PORT") 2>/dev/null && break; sleep 0.1; done
            BROKER_ENV=(STRATA_OTLP_ENDPOINT="http://127.0.0.1:$SINK_PORT" STRATA_OTLP_SAMPLE_RATIO="${RATIO[$mode]}")
        fi
        start_broker
        topic="trace-$mode-$run"
        measure "$mode" "$run" produce-1k-p8 produce --topic "$topic" --partitions 8 --record-size 1024 \
            --acks all --records "$RECORDS" --duration 60
        measure "$mode" "$run" consume-1k-p8 consume --topic "$topic"
        measure "$mode" "$run" e2e-1k-p8 e2e --topic "$topic-e2e" --partitions 8 --record-size 1024 --acks all \
            --rate "$E2E_RATE" --duration "$E2E_SECONDS" --warmup 3
        stop_broker  # a clean stop flushes the spans still buffered
        rm -rf "$WORK/data"
        if [ -n "$SINK_PID" ]; then stop_pid "$SINK_PID" "OTLP sink"; SINK_PID=""; fi
    done
done

SINKS="$(cat "$WORK"/sink.*.json 2>/dev/null | wc -l)"
log "collected $SINKS sink reports"
TABLE="$(python3 - "$RESULTS" "$WORK" <<'EOF'
import glob, json, statistics, sys
results = [json.loads(l) for l in open(sys.argv[1])]
modes = [("off", "off"), ("sampled", "0.01 (default when on)"), ("all", "1.0")]

def runs(mode, name):
    return [r for r in results if r["trace_mode"] == mode and r["name"] == name]

def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")

def mibs(mode, name):
    values = [r.get("mib_per_s") for r in runs(mode, name)]
    values = [v for v in values if v is not None]
    if not values:
        return "failed"
    return f"{med(values):.0f} ({min(values):.0f}–{max(values):.0f})"

def cpu_per_gib(mode, name):
    # Broker CPU seconds per GiB of record values moved.
    per = [r["broker_cpu_s"] / (r["bytes"] / 2**30) for r in runs(mode, name) if r.get("bytes")]
    return f"{med(per):.2f}" if per else "–"

def e2e(mode, path):
    values = []
    for r in runs(mode, "e2e-1k-p8"):
        v = r
        for k in path:
            v = v.get(k, {}) if isinstance(v, dict) else {}
        values.append(v if isinstance(v, (int, float)) else None)
    return f"{med(values):.1f}"

def e2e_cpu(mode):
    per = [r["broker_cpu_s"] / r["wall_s"] for r in runs(mode, "e2e-1k-p8") if r.get("wall_s")]
    return f"{100 * med(per):.0f}%" if per else "–"

def spans(mode):
    counts = [json.load(open(f)) for f in glob.glob(f"{sys.argv[2]}/sink.{mode}.*.json")]
    if not counts:
        return "0", "0"
    return str(sum(c["spans"] for c in counts)), f"{sum(c['bytes'] for c in counts) / 2**20:.1f}"

def failures(mode):
    bad = [r["name"] for r in results if r["trace_mode"] == mode and not r.get("ok")]
    return ", ".join(sorted(set(bad))) or "none"

print("| export (`otlp_sample_ratio`) | produce MiB/s | broker CPU s per GiB produced | consume MiB/s "
      "| broker CPU s per GiB read | e2e ack p99 (ms) | e2e p99 (ms) | broker CPU during e2e "
      "| spans exported | MiB exported | failed runs |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
for mode, label in modes:
    count, size = spans(mode)
    print(f"| {label} | {mibs(mode, 'produce-1k-p8')} | {cpu_per_gib(mode, 'produce-1k-p8')} "
          f"| {mibs(mode, 'consume-1k-p8')} | {cpu_per_gib(mode, 'consume-1k-p8')} "
          f"| {e2e(mode, ['produce', 'ack_latency_ms', 'p99'])} | {e2e(mode, ['e2e_latency_ms', 'p99'])} "
          f"| {e2e_cpu(mode)} | {count} | {size} | {failures(mode)} |")
EOF
)"

CPU_MODEL="$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
REPORT="$WORK/report.md"
{
    echo "<!-- tracing:begin -->"
    echo "## Tracing overhead"
    echo
    echo "\`bench/tracing.sh\` on $(date -u +%Y-%m-%d): $(nproc) cores ($CPU_MODEL), one broker"
    echo "(embedded metadata, default flush policy) started afresh for each mode in each of $REPEAT"
    echo "repetitions, modes in turn. Trace export goes over OTLP/gRPC to a sink on loopback"
    echo "(\`bench/otlp_sink.py\`, which counts and drops; it shares the cores). Each repetition:"
    echo "$RECORDS records of 1 KiB, acks=all, 8 partitions, produced then read back; then an"
    echo "end-to-end run at $E2E_RATE MiB/s for $E2E_SECONDS s (3 s warm-up). Throughput is the median"
    echo "with the range in brackets; the other columns are medians; spans and MiB exported are"
    echo "totals over all repetitions."
    echo
    echo "$TABLE"
    echo
    echo "With export off, each span is one check of a disabled call site. The default ratio"
    echo "exports about one trace in a hundred; 1.0 exports every request (and its children),"
    echo "the price of tracing everything. The sink's own CPU is not in the broker's columns."
    echo
    echo "Command: \`RECORDS=$RECORDS REPEAT=$REPEAT E2E_SECONDS=$E2E_SECONDS E2E_RATE=$E2E_RATE bench/tracing.sh\`."
    echo "<!-- tracing:end -->"
} >"$REPORT"
write_section tracing "$REPORT"

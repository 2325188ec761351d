#!/usr/bin/env bash
# Transactions benchmark: one broker (embedded metadata, loopback, default flush policy,
# local-directory object store). Each repetition starts a fresh broker and:
#   1. produces 1 KiB records (acks=all, 8 partitions) with an idempotent producer, and
#      with a transactional one committing every 100 ms;
#   2. replays the transactional topic from the local log, read_uncommitted and
#      read_committed (which goes first alternates between repetitions: the first read
#      warms the page cache);
#   3. produces the same transactional load to a tiered topic whose local copies go once
#      uploaded (local.retention.bytes=1), waits for the uploads, and replays it from the
#      object store in both modes (order alternating), then both again (the second pair
#      reads through a warm segment cache).
# Writes the "Transactions" section of docs/benchmarks.md. Asserts nothing about timings.
#
#   bench/transactions.sh                                      # about 3 minutes after the build
#   RECORDS=200000 REPEAT=1 OUT=/tmp/t.md bench/transactions.sh  # smoke run
#
# Knobs: RECORDS (1 KiB records per produce run, 1000000), REPEAT (3).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-$ROOT/docs/benchmarks.md}"
RECORDS="${RECORDS:-1000000}"
REPEAT="${REPEAT:-3}"

SCRIPT=transactions.sh
WORK="$(mktemp -d -t strata-transactions-bench.XXXXXX)"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

log "building strata and strata-bench (release)"
cargo build --release -p strata-broker
cargo build --release -p strata-bench
STRATA="$ROOT/target/release/strata"
BENCH="$ROOT/target/release/strata-bench"

cleanup() {
    stop_broker
    rm -rf "$WORK"
}
trap cleanup EXIT

RESULTS="$WORK/results.jsonl"
# measure RUN NAME ARGS...: one strata-bench run, its JSON result line with the broker's
# CPU seconds added.
measure() {
    local run="$1" name="$2"; shift 2
    local out="$WORK/$run.$name.out" cpu0 cpu1 status=0
    cpu0="$(cpu "$BROKER_PID")"
    timeout -k 10 300 "$BENCH" "$@" --bootstrap "$BOOTSTRAP" --name "$name" >"$out" 2>"$out.err" || status=$?
    cpu1="$(cpu "$BROKER_PID")"
    [ "$status" -eq 0 ] || { log "$name: exit status $status"; sed 's/^/    /' "$out.err" | tail -n 5 >&2; }
    python3 - "$out" "$run" "$cpu0" "$cpu1" "$name" >>"$RESULTS" <<'EOF'
import json, sys
out, run, cpu0, cpu1, name = sys.argv[1:]
lines = [l for l in open(out) if l.startswith('{')]
result = json.loads(lines[-1]) if lines else {"name": name, "ok": False, "error": "no result line"}
result.update(run=int(run), broker_cpu_s=float(cpu1) - float(cpu0))
print(json.dumps(result))
EOF
}

# wait_tiered TOPIC: until every partition's local log start passed half its end (the
# uploaded segments' local copies are gone).
wait_tiered() {
    local topic="$1"
    for _ in $(seq 1 600); do
        if curl -fsS "$METRICS_URL" | python3 -c '
import re, sys
topic = sys.argv[1]
text = sys.stdin.read()
def values(name):
    pattern = rf"^strata_{name}\{{[^}}]*partition=\"(\d+)\"[^}}]*topic=\"{re.escape(topic)}\"[^}}]*\}} (\S+)$"
    return {p: float(v) for p, v in re.findall(pattern, text, re.M)}
start, end = values("local_log_start_offset"), values("log_end_offset")
ok = len(end) == 8 and all(start.get(p, 0) > end[p] / 2 for p in end)
sys.exit(0 if ok else 1)' "$topic"; then
            return 0
        fi
        sleep 0.5
    done
    die "the segments of $topic were not uploaded and removed locally within 300 s"
}

# Consumers read with --compacted (until every partition reports its end): each
# transaction's markers take offsets that no record fills.
PRODUCE=(--partitions 8 --record-size 1024 --acks all --records "$RECORDS" --duration 60)
TIERED=(--topic-config remote.storage.enable=true --topic-config segment.bytes=4194304
    --topic-config local.retention.bytes=1 --topic-config retention.bytes=-1)
for run in $(seq 1 "$REPEAT"); do
    PORT="$(free_port)"; HTTP_PORT="$(free_port)"; ADMIN_PORT="$(free_port)"
    BOOTSTRAP="127.0.0.1:$PORT"
    METRICS_URL="http://127.0.0.1:$HTTP_PORT/metrics"
    BROKER_CMD=("$STRATA" serve --listen "$BOOTSTRAP" --http "127.0.0.1:$HTTP_PORT"
        --admin-listen "127.0.0.1:$ADMIN_PORT" --data-dir "$WORK/data" --metadata embedded)
    BROKER_ENV=(STRATA_REMOTE_UPLOAD_INTERVAL_MS=200 STRATA_LOG_HOUSEKEEPING_INTERVAL_MS=200)
    start_broker
    measure "$run" produce-idempotent produce --topic "idem-$run" "${PRODUCE[@]}" -X enable.idempotence=true
    measure "$run" produce-transactional produce --topic "txn-$run" "${PRODUCE[@]}" --transaction-interval-ms 100
    # The first read of a topic warms the page cache: odd repetitions read uncommitted
    # first, even ones committed first.
    if [ $((run % 2)) -eq 1 ]; then
        measure "$run" local-read_uncommitted consume --compacted --topic "txn-$run"
        measure "$run" local-read_committed consume --compacted --topic "txn-$run" -X isolation.level=read_committed
    else
        measure "$run" local-read_committed consume --compacted --topic "txn-$run" -X isolation.level=read_committed
        measure "$run" local-read_uncommitted consume --compacted --topic "txn-$run"
    fi
    measure "$run" produce-tiered produce --topic "tiered-$run" "${PRODUCE[@]}" --transaction-interval-ms 100 "${TIERED[@]}"
    wait_tiered "tiered-$run"
    if [ $((run % 2)) -eq 1 ]; then
        measure "$run" remote-read_uncommitted consume --compacted --topic "tiered-$run"
        measure "$run" remote-read_committed consume --compacted --topic "tiered-$run" -X isolation.level=read_committed
    else
        measure "$run" remote-read_committed consume --compacted --topic "tiered-$run" -X isolation.level=read_committed
        measure "$run" remote-read_uncommitted consume --compacted --topic "tiered-$run"
    fi
    measure "$run" warm-read_uncommitted consume --compacted --topic "tiered-$run"
    measure "$run" warm-read_committed consume --compacted --topic "tiered-$run" -X isolation.level=read_committed
    stop_broker
    rm -rf "$WORK/data"
done

TABLE="$(python3 - "$RESULTS" <<'EOF'
import json, statistics, sys
results = [json.loads(l) for l in open(sys.argv[1])]

def mibs(name):
    values = [r.get("mib_per_s") for r in results if r["name"] == name and r.get("mib_per_s")]
    return statistics.median(values) if values else None, values

def cell(name):
    m, values = mibs(name)
    return "failed" if m is None else f"{m:.0f} ({min(values):.0f}–{max(values):.0f})"

def cpu_per_gib(name):
    per = [r["broker_cpu_s"] / (r["bytes"] / 2**30) for r in results if r["name"] == name and r.get("bytes")]
    return f"{statistics.median(per):.2f}" if per else "–"

def ratio(name, base):
    a, b = mibs(name)[0], mibs(base)[0]
    return f"{a / b:.2f}×" if a and b else "–"

def failed():
    return ", ".join(sorted({r["name"] for r in results if not r.get("ok")})) or "none"

rows = [
    ("produce, idempotent", "produce-idempotent", None),
    ("produce, transactional (commit every 100 ms)", "produce-transactional", "produce-idempotent"),
    ("replay from the local log, read_uncommitted", "local-read_uncommitted", None),
    ("replay from the local log, read_committed", "local-read_committed", "local-read_uncommitted"),
    ("produce, transactional, tiered topic", "produce-tiered", "produce-idempotent"),
    ("replay from the object store, read_uncommitted (first two reads)", "remote-read_uncommitted", None),
    ("replay from the object store, read_committed (first two reads)", "remote-read_committed", "remote-read_uncommitted"),
    ("replay from the object store, read_uncommitted (warm cache)", "warm-read_uncommitted", None),
    ("replay from the object store, read_committed (warm cache)", "warm-read_committed", "warm-read_uncommitted"),
]
print("| run | MiB/s (median, min–max) | ratio | broker CPU s per GiB |")
print("|---|---:|---:|---:|")
for label, name, base in rows:
    print(f"| {label} | {cell(name)} | {ratio(name, base) if base else ''} | {cpu_per_gib(name)} |")
print()
print(f"Failed runs: {failed()}.")
EOF
)"

CPU_MODEL="$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
REPORT="$WORK/report.md"
{
    echo "<!-- transactions:begin -->"
    echo "## Transactions"
    echo
    echo "\`RECORDS=$RECORDS REPEAT=$REPEAT bench/transactions.sh\` on $(date -u +%Y-%m-%d): $(nproc) cores"
    echo "($CPU_MODEL), one broker (embedded metadata, default flush policy, local-directory"
    echo "object store), strata-bench (librdkafka) on the same machine; a fresh broker per"
    echo "repetition. 1 KiB records, acks=all, 8 partitions. Transactional runs commit every"
    echo "100 ms (each commit waits for the transaction's records, then AddPartitionsToTxn,"
    echo "EndTxn and eight markers); ratios compare with the row they follow (idempotent"
    echo "produce, read_uncommitted replay). The tiered rows replay a topic whose local copies"
    echo "were removed once uploaded, so every read goes to the object store through the"
    echo "segment cache."
    echo
    echo "$TABLE"
    echo "<!-- transactions:end -->"
} >"$REPORT"
write_section transactions "$REPORT"

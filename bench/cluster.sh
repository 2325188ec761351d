#!/usr/bin/env bash
# Replication benchmark: the cost of replication factor 3 against replication factor 1,
# both acks=all, measured in the same run. Three brokers on loopback sharing one etcd
# (free ports, temp data dirs, default flush policy); a topic of 6 partitions per run
# (min.insync.replicas 2 with replication factor 3), RECORDS records of 1 KiB.
#
# With BASE_STRATA set (an older `strata` binary, the "before"), a second three-broker
# cluster runs that binary beside the first (its own etcd prefix) and every round runs
# both clusters' pairs, the clusters' order alternating between rounds:
#   before rf1, before rf3, after rf1, after rf3, then after first in the next round ...
# Each pair gives a ratio (RF3 MiB/s / RF1 MiB/s, same cluster, same round); the report
# shows the median and range over ROUNDS rounds. Topics are deleted after each run so
# disk and page cache use stay flat. Failover is bench/failover.sh's scenario.
# Writes the "Replication" section of docs/benchmarks.md.
#
#   RECORDS=300000 bench/cluster.sh                                      # about 2 minutes
#   RECORDS=300000 BASE_STRATA=/tmp/strata-base/strata bench/cluster.sh  # before and after
#   STRATA=/path/strata BENCH=/path/strata-bench ...                     # skip the build
#
# All three brokers and the client share this machine's cores, so the numbers are a
# floor for what separate machines do; what they show is the cost of replication
# relative to replication factor 1 on the same hardware. Asserts nothing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-$ROOT/docs/benchmarks.md}"
RECORDS="${RECORDS:-300000}"   # 1 KiB records per run (~293 MiB)
ROUNDS="${ROUNDS:-5}"          # rounds of (RF1, RF3) pairs per cluster
BASE_STRATA="${BASE_STRATA:-}" # optional: the "before" binary

SCRIPT=cluster.sh
WORK="$(mktemp -d -t strata-cluster-bench.XXXXXX)"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
if [ -z "${STRATA:-}" ] || [ -z "${BENCH:-}" ]; then
    log "building strata and strata-bench (release)"
    cargo build --release -p strata-broker -p strata-bench
fi
STRATA="${STRATA:-$TARGET/release/strata}"
BENCH="${BENCH:-$TARGET/release/strata-bench}"
command -v etcd >/dev/null || die "etcd is not installed (scripts/install-deps.sh installs it)"
[ -z "$BASE_STRATA" ] || [ -x "$BASE_STRATA" ] || die "BASE_STRATA=$BASE_STRATA is not an executable"

ETCD_PID=""
declare -A PIDS KAFKA_PORTS HTTP_PORTS REPL_PORTS ADMIN_PORTS BOOTSTRAPS
cleanup() {
    for node in "${!PIDS[@]}"; do stop_pid "${PIDS[$node]}" "broker $node"; done
    stop_pid "$ETCD_PID" etcd
    rm -rf "$WORK"
}
trap cleanup EXIT

ETCD_PORT="$(free_port)"; ETCD_PEER="$(free_port)"
etcd --data-dir "$WORK/etcd" --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
    --initial-cluster "default=http://127.0.0.1:$ETCD_PEER" >"$WORK/etcd.log" 2>&1 &
ETCD_PID=$!
for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$ETCD_PORT/health" >/dev/null 2>&1 && break
    sleep 0.1
done

# start_node CLUSTER BINARY NODE: one broker of CLUSTER ("before" or "after").
start_node() {
    local cluster="$1" binary="$2" node="$3" key="$1-$3"
    KAFKA_PORTS[$key]="$(free_port)"; HTTP_PORTS[$key]="$(free_port)"
    REPL_PORTS[$key]="$(free_port)"; ADMIN_PORTS[$key]="$(free_port)"
    env NO_COLOR=1 "$binary" serve --node-id "$node" --rack "r$node" \
        --metadata "etcd://127.0.0.1:$ETCD_PORT/bench-$cluster" \
        --listen "127.0.0.1:${KAFKA_PORTS[$key]}" --http "127.0.0.1:${HTTP_PORTS[$key]}" \
        --replication-listen "127.0.0.1:${REPL_PORTS[$key]}" --admin-listen "127.0.0.1:${ADMIN_PORTS[$key]}" \
        --data-dir "$WORK/data-$key" >>"$WORK/strata-$key.log" 2>&1 &
    PIDS[$key]=$!
    for _ in $(seq 1 300); do
        curl -fsS "http://127.0.0.1:${HTTP_PORTS[$key]}/readyz" >/dev/null 2>&1 && return 0
        kill -0 "${PIDS[$key]}" 2>/dev/null || { tail -n 30 "$WORK/strata-$key.log" >&2; die "broker $key exited"; }
        sleep 0.1
    done
    die "broker $key not ready after 30 s"
}
start_cluster() {
    local cluster="$1" binary="$2"
    log "starting cluster $cluster: $binary"
    for node in 1 2 3; do start_node "$cluster" "$binary" "$node"; done
    BOOTSTRAPS[$cluster]="127.0.0.1:${KAFKA_PORTS[$cluster-1]},127.0.0.1:${KAFKA_PORTS[$cluster-2]},127.0.0.1:${KAFKA_PORTS[$cluster-3]}"
}
CLUSTERS=(after)
start_cluster after "$STRATA"
if [ -n "$BASE_STRATA" ]; then
    CLUSTERS=(before after)
    start_cluster before "$BASE_STRATA"
fi
sleep 2

RESULTS="$WORK/results.jsonl"
LOAD_START="$(cut -d' ' -f1 /proc/loadavg)"
# run CLUSTER ROUND RF: one acks=all produce run, its topic deleted afterwards.
run() {
    local cluster="$1" round="$2" rf="$3" topic
    topic="cluster-$cluster-rf$rf-$round-$(date +%s%N)"
    log "round $round, cluster $cluster: $RECORDS records of 1 KiB, 6 partitions, replication factor $rf, acks=all"
    "$BENCH" produce --bootstrap "${BOOTSTRAPS[$cluster]}" --name "$cluster/rf$rf/$round" --topic "$topic" \
        --records "$RECORDS" --record-size 1024 --partitions 6 --replication-factor "$rf" --acks all \
        --topic-config min.insync.replicas="$(( rf > 1 ? 2 : 1 ))" \
        | tee -a "$RESULTS" >&2
    "$BENCH" delete-topics --bootstrap "${BOOTSTRAPS[$cluster]}" "$topic" >/dev/null 2>&1 \
        || log "could not delete $topic"
}
for round in $(seq 1 "$ROUNDS"); do
    order=("${CLUSTERS[@]}")
    if [ $((round % 2)) -eq 0 ]; then
        order=(); for ((i = ${#CLUSTERS[@]} - 1; i >= 0; i--)); do order+=("${CLUSTERS[$i]}"); done
    fi
    for cluster in "${order[@]}"; do
        run "$cluster" "$round" 1
        run "$cluster" "$round" 3
    done
done

LOAD_END="$(cut -d' ' -f1 /proc/loadavg)"
CPU_MODEL="$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
COMMAND="RECORDS=$RECORDS ROUNDS=$ROUNDS${BASE_STRATA:+ BASE_STRATA=$BASE_STRATA} bench/cluster.sh"
REPORT="$WORK/report.md"
{
    echo "<!-- replication:begin -->"
    echo "## Replication"
    echo
    echo "\`bench/cluster.sh\` on $(date -u +%Y-%m-%d): $(nproc) cores ($CPU_MODEL), three brokers per"
    echo "cluster and etcd on this one machine (loopback), default flush policy, 6 partitions,"
    echo "$RECORDS records of 1 KiB per run, acks=all (\`min.insync.replicas\` 2 with replication"
    echo "factor 3). Every broker and the client share the same cores, so replication factor 3 does"
    echo "three times the disk writes and two extra network hops on the same CPUs: the figure is the"
    echo "ratio, RF3 against RF1 on the same cluster in the same round ($ROUNDS rounds, runs"
    echo "interleaved; median and range). Load average (1 min) $LOAD_START at the start, $LOAD_END at"
    echo "the end: other work on the machine slows RF3 more than RF1, since each acks=all round"
    echo "waits for three processes to be scheduled in turn."
    echo
    python3 - "$RESULTS" "${CLUSTERS[@]}" <<'EOF'
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    if line.startswith('{'):
        r = json.loads(line)
        cluster, rf, round_ = r['name'].split('/')
        runs[(cluster, rf, round_)] = r
def fmt(values, digits):
    if not values:
        return 'n/a'
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"
print('| cluster | RF1 acks=all MiB/s | RF3 acks=all MiB/s | RF3 / RF1 | RF3 ack latency p50 / p99 (ms) | failed runs |')
print('|---|---:|---:|---:|---|---:|')
medians = {}
for cluster in sys.argv[2:]:
    rounds = sorted({k[2] for k in runs if k[0] == cluster}, key=int)
    rf1, rf3, ratio, p50, p99, failed = [], [], [], [], [], 0
    for rnd in rounds:
        a, b = runs.get((cluster, 'rf1', rnd)), runs.get((cluster, 'rf3', rnd))
        if not a or not b or not a.get('ok') or not b.get('ok'):
            failed += 1
            continue
        x, y = a['mib_per_s'], b['mib_per_s']
        rf1.append(x); rf3.append(y); ratio.append(y / x)
        p50.append(b['ack_latency_ms']['p50']); p99.append(b['ack_latency_ms']['p99'])
    medians[cluster] = statistics.median(ratio) if ratio else None
    label = {'before': 'before (baseline binary)', 'after': 'after (this tree)'}.get(cluster, cluster)
    lat = f"{statistics.median(p50):.1f} / {statistics.median(p99):.1f}" if p50 else 'n/a'
    print(f"| {label} | {fmt(rf1, 1)} | {fmt(rf3, 1)} | {fmt(ratio, 2)}× | {lat} | {failed} |")
if medians.get('before') and medians.get('after'):
    print()
    print(f"Median RF3/RF1 ratio: {medians['before']:.2f}× before, {medians['after']:.2f}× after.")
EOF
    echo
    echo "Command: \`$COMMAND\`."
    echo "<!-- replication:end -->"
} >"$REPORT"

write_section replication "$REPORT"

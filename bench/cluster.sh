#!/usr/bin/env bash
# Replication benchmark: three brokers on loopback sharing one etcd (free ports, temp data
# dirs, default flush policy), then produce throughput and acknowledgement latency for a
# topic of 6 partitions with replication factor 1 and 3, acks=1 and acks=all
# (min.insync.replicas=2), and how long a leader failover stalls a steady producer.
# Writes the "Replication" section of docs/benchmarks.md.
#
#   bench/cluster.sh                  # about 3 minutes after the build on 2 cores
#   RECORDS=100000 bench/cluster.sh   # smoke run
#
# All three brokers and the client share this machine's cores, so the numbers are a
# floor for what separate machines do; what they show is the cost of replication
# relative to replication factor 1 on the same hardware. Asserts nothing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-$ROOT/docs/benchmarks.md}"
RECORDS="${RECORDS:-1000000}"         # 1 KiB records per run (~977 MiB)
SESSION_MS="${SESSION_MS:-3000}"       # broker_session_timeout_ms for the failover run

SCRIPT=cluster.sh
WORK="$(mktemp -d -t strata-cluster-bench.XXXXXX)"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

log "building strata and strata-bench (release)"
cargo build --release -p strata-broker
cargo build --release -p strata-bench
STRATA="$ROOT/target/release/strata"
BENCH="$ROOT/target/release/strata-bench"
command -v etcd >/dev/null || die "etcd is not installed (scripts/install-deps.sh installs it)"

ETCD_PID=""
declare -A PIDS KAFKA_PORTS HTTP_PORTS REPL_PORTS ADMIN_PORTS
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
METADATA="etcd://127.0.0.1:$ETCD_PORT/bench"

start_node() {
    local node="$1"
    env NO_COLOR=1 STRATA_BROKER_SESSION_TIMEOUT_MS="$SESSION_MS" \
        "$STRATA" serve --node-id "$node" --rack "r$node" --metadata "$METADATA" \
        --listen "127.0.0.1:${KAFKA_PORTS[$node]}" --http "127.0.0.1:${HTTP_PORTS[$node]}" \
        --replication-listen "127.0.0.1:${REPL_PORTS[$node]}" --admin-listen "127.0.0.1:${ADMIN_PORTS[$node]}" --data-dir "$WORK/data$node" \
        >>"$WORK/strata$node.log" 2>&1 &
    PIDS[$node]=$!
    for _ in $(seq 1 300); do
        curl -fsS "http://127.0.0.1:${HTTP_PORTS[$node]}/readyz" >/dev/null 2>&1 && return 0
        kill -0 "${PIDS[$node]}" 2>/dev/null || { tail -n 30 "$WORK/strata$node.log" >&2; die "broker $node exited"; }
        sleep 0.1
    done
    die "broker $node not ready after 30 s"
}
for node in 1 2 3; do
    KAFKA_PORTS[$node]="$(free_port)"; HTTP_PORTS[$node]="$(free_port)"; REPL_PORTS[$node]="$(free_port)"; ADMIN_PORTS[$node]="$(free_port)"
done
for node in 1 2 3; do start_node "$node"; done
BOOTSTRAP="127.0.0.1:${KAFKA_PORTS[1]},127.0.0.1:${KAFKA_PORTS[2]},127.0.0.1:${KAFKA_PORTS[3]}"
sleep 2

RESULTS="$WORK/results.jsonl"
run() {
    local name="$1" rf="$2" acks="$3"
    log "scenario $name: $RECORDS records of 1 KiB, 6 partitions, replication factor $rf, acks=$acks"
    "$BENCH" produce --bootstrap "$BOOTSTRAP" --name "$name" --records "$RECORDS" --record-size 1024 \
        --partitions 6 --replication-factor "$rf" --acks "$acks" --topic-config min.insync.replicas="$(( rf > 1 ? 2 : 1 ))" \
        | tee -a "$RESULTS" >&2
}
run rf1-acks1 1 1
run rf1-acksall 1 all
run rf3-acks1 3 1
run rf3-acksall 3 all

# Failover: a steady 20 MiB/s acks=all producer; the broker leading partition 0 is
# killed (SIGKILL) 10 s in. The producer's worst acknowledgement latency is the stall.
log "failover: steady acks=all producer, the leader of partition 0 killed after 10 s"
FAILOVER_TOPIC="failover-$(date +%s)"
"$BENCH" e2e --bootstrap "$BOOTSTRAP" --name failover --topic "$FAILOVER_TOPIC" --partitions 6 \
    --replication-factor 3 --acks all --topic-config min.insync.replicas=2 --rate 20 --duration 30 --warmup 2 \
    >"$WORK/failover.out" 2>&1 &
E2E_PID=$!
sleep 10
LEADER="$(python3 - "$BOOTSTRAP" "$FAILOVER_TOPIC" <<'EOF'
import sys
from confluent_kafka.admin import AdminClient
md = AdminClient({"bootstrap.servers": sys.argv[1]}).list_topics(topic=sys.argv[2], timeout=10)
print(md.topics[sys.argv[2]].partitions[0].leader)
EOF
)"
log "killing broker $LEADER"
KILLED_AT="$(date +%s.%N)"
kill -KILL "${PIDS[$LEADER]}"
wait "${PIDS[$LEADER]}" 2>/dev/null || true
unset "PIDS[$LEADER]"
wait "$E2E_PID" || true
cp "$WORK/failover.out" "${FAILOVER_LOG:-/tmp/strata-cluster-bench-failover.out}"
FAILOVER_JSON="$(grep '^{' "$WORK/failover.out" | tail -n 1)"
echo "$FAILOVER_JSON" >"$WORK/f.json"
NEW_LEADER_AT="$(sed 's/\x1b\[[0-9;]*m//g' "$WORK"/strata*.log | grep 'controller changed a partition' \
    | grep "topic=$FAILOVER_TOPIC partition=0 " | tail -n 1 | cut -c1-27 || true)"
ELECTION_S="$(python3 - "$KILLED_AT" "$NEW_LEADER_AT" <<'EOF'
import sys, datetime
killed = float(sys.argv[1])
try:
    at = datetime.datetime.fromisoformat(sys.argv[2].rstrip("Z")).replace(tzinfo=datetime.timezone.utc).timestamp()
    print(f"{at - killed:.1f}")
except ValueError:
    print("nan")
EOF
)"

CPU_MODEL="$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
REPORT="$WORK/report.md"
{
    echo "<!-- replication:begin -->"
    echo "## Replication"
    echo
    echo "\`bench/cluster.sh\` on $(date -u +%Y-%m-%d): $(nproc) cores ($CPU_MODEL), three brokers and"
    echo "etcd on this one machine (loopback), default flush policy, 6 partitions, $RECORDS records"
    echo "of 1 KiB per run. Every broker and the client share the same cores, so replication factor 3"
    echo "does three times the disk writes and two extra network hops on the same CPUs: read the"
    echo "rows against each other, not as a cluster's capacity."
    echo
    "$BENCH" table "$RESULTS"
    echo
    echo "Failover under a steady 20 MiB/s acks=all producer (replication factor 3,"
    echo "\`min.insync.replicas\` 2, \`broker_session_timeout_ms\` $SESSION_MS): the leader of"
    echo "partition 0 killed with SIGKILL. A new leader was elected $ELECTION_S s after the kill"
    echo "(lease expiry, then the controller's next refresh). Producer: $(jget "$WORK/f.json" produce.records)"
    echo "records acknowledged, $(jget "$WORK/f.json" produce.failed) failed (first error:"
    echo "$(jget "$WORK/f.json" produce.first_error)); its worst acknowledgement latency, the stall"
    echo "clients saw, was $(jget "$WORK/f.json" produce.ack_latency_ms.max) ms (p99"
    echo "$(jget "$WORK/f.json" produce.ack_latency_ms.p99) ms). The consumer read"
    echo "$(jget "$WORK/f.json" consume.records) records (first error: $(jget "$WORK/f.json" consume.first_error);"
    echo "overall ok: $(jget "$WORK/f.json" ok))."
    echo
    echo "Command: \`RECORDS=$RECORDS bench/cluster.sh\`."
    echo "<!-- replication:end -->"
} >"$REPORT"

write_section replication "$REPORT"

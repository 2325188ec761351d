#!/usr/bin/env bash
# Security overhead benchmark (issue 16): one broker (embedded metadata, loopback, default
# flush policy) with two listeners, PLAINTEXT and SASL_SSL (TLS, SCRAM-SHA-512 with one
# bootstrap user), and the same strata-bench runs against each: a 1 KiB acks=all produce
# and its read-back over 8 partitions, then a steady-rate end-to-end run. Each repetition
# runs both listeners in turn, each on a fresh broker. Writes the "Security overhead"
# section of docs/benchmarks.md.
#
#   bench/security.sh                                        # about 4 minutes after the build
#   RECORDS=200000 REPEAT=1 OUT=/tmp/s.md bench/security.sh  # smoke run
#
# Knobs: RECORDS (1 KiB records per produce run, 1000000), REPEAT (3), E2E_SECONDS (15),
# E2E_RATE (MiB/s, 20), STRATA_BIN (the broker binary to measure instead of the one built
# here, e.g. a baseline), BROKER_CPUS / CLIENT_CPUS (taskset CPU lists to pin the broker
# and the client to; unpinned by default). Binaries come from $CARGO_TARGET_DIR (target/ if
# unset). strata-bench is built with librdkafka's OpenSSL support (the
# client side only; the broker uses rustls), which needs libssl-dev. Certificates come
# from openssl. Asserts nothing about timings.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-$ROOT/docs/benchmarks.md}"
RECORDS="${RECORDS:-1000000}"
REPEAT="${REPEAT:-3}"
E2E_SECONDS="${E2E_SECONDS:-15}"
E2E_RATE="${E2E_RATE:-20}"
BROKER_CPUS="${BROKER_CPUS:-}"
CLIENT_CPUS="${CLIENT_CPUS:-}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"

SCRIPT=security.sh
WORK="$(mktemp -d -t strata-security-bench.XXXXXX)"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
command -v openssl >/dev/null || die "openssl is needed to make the test certificates"
[ -f /usr/include/openssl/ssl.h ] || die "libssl-dev is needed to build strata-bench with TLS (apt-get install libssl-dev)"

log "building strata and strata-bench (release)"
[ -n "${STRATA_BIN:-}" ] || cargo build --release -p strata-broker
cargo build --release -p strata-bench
STRATA="${STRATA_BIN:-$TARGET/release/strata}"
BENCH="$TARGET/release/strata-bench"
PIN_BROKER=(); PIN_CLIENT=()
[ -z "$BROKER_CPUS" ] || PIN_BROKER=(taskset -c "$BROKER_CPUS")
[ -z "$CLIENT_CPUS" ] || PIN_CLIENT=(taskset -c "$CLIENT_CPUS")

cleanup() {
    stop_broker
    rm -rf "$WORK"
}
trap cleanup EXIT

# A CA and a server certificate for 127.0.0.1, RSA 2048 (what most deployments use).
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$WORK/ca.key" -out "$WORK/ca.pem" \
    -subj "/CN=strata-bench-ca" -days 2 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout "$WORK/server.key" -out "$WORK/server.csr" \
    -subj "/CN=localhost" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$WORK/san"
openssl x509 -req -in "$WORK/server.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" \
    -CAcreateserial -out "$WORK/server.pem" -days 2 -extfile "$WORK/san" 2>/dev/null
echo "bench:SCRAM-SHA-512:bench-password-not-secret" >"$WORK/users"

CLIENT_X=()
RESULTS="$WORK/results.jsonl"
# measure MODE RUN NAME ARGS...: one strata-bench run; its result line goes to RESULTS
# with the mode, the run, the broker's and the client's CPU seconds and the wall seconds
# it took.
measure() {
    local mode="$1" run="$2" name="$3"; shift 3
    local out="$WORK/$mode.$run.$name.out" cpu0 cpu1 wall0 wall1 status=0
    cpu0="$(cpu "$BROKER_PID")"; wall0="$(date +%s.%N)"
    /usr/bin/time -f '%U %S' -o "$out.time" timeout -k 10 300 "${PIN_CLIENT[@]}" "$BENCH" "$@" \
        --bootstrap "$BOOTSTRAP" "${CLIENT_X[@]}" --name "$name" >"$out" 2>"$out.err" || status=$?
    cpu1="$(cpu "$BROKER_PID")"; wall1="$(date +%s.%N)"
    [ "$status" -eq 0 ] || { log "$mode $name: exit status $status"; sed 's/^/    /' "$out.err" | tail -n 5 >&2; }
    python3 - "$out" "$mode" "$run" "$cpu0" "$cpu1" "$wall0" "$wall1" "$name" "$out.time" >>"$RESULTS" <<'EOF'
import json, sys
out, mode, run, cpu0, cpu1, wall0, wall1, name, timing = sys.argv[1:]
lines = [l for l in open(out) if l.startswith('{')]
result = json.loads(lines[-1]) if lines else {"name": name, "ok": False, "error": "no result line"}
try:
    client_cpu_s = sum(float(v) for v in open(timing).read().split()[-2:])
except (OSError, ValueError):
    client_cpu_s = None
result.update(security_mode=mode, run=int(run), broker_cpu_s=float(cpu1) - float(cpu0),
              client_cpu_s=client_cpu_s, wall_s=float(wall1) - float(wall0))
print(json.dumps(result))
EOF
}

MODES=(plaintext sasl_ssl)
for run in $(seq 1 "$REPEAT"); do
    for mode in "${MODES[@]}"; do
        # A fresh broker per mode: the previous run's segments (uploaded to the local
        # object store in the background) must not load the next one.
        PLAIN_PORT="$(free_port)"; SECURE_PORT="$(free_port)"; HTTP_PORT="$(free_port)"; ADMIN_PORT="$(free_port)"
        BROKER_CMD=("${PIN_BROKER[@]}" "$STRATA" serve --http "127.0.0.1:$HTTP_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT"
            --data-dir "$WORK/data" --metadata embedded)
        BROKER_ENV=(STRATA_LISTENERS="PLAINTEXT://127.0.0.1:$PLAIN_PORT,SASL_SSL://127.0.0.1:$SECURE_PORT"
            STRATA_SSL_CERT_FILE="$WORK/server.pem" STRATA_SSL_KEY_FILE="$WORK/server.key"
            STRATA_SASL_ENABLED_MECHANISMS=SCRAM-SHA-512 STRATA_SASL_BOOTSTRAP_USERS_FILE="$WORK/users")
        start_broker
        if [ "$mode" = plaintext ]; then
            BOOTSTRAP="127.0.0.1:$PLAIN_PORT"; CLIENT_X=()
        else
            BOOTSTRAP="127.0.0.1:$SECURE_PORT"
            CLIENT_X=(-X security.protocol=SASL_SSL -X sasl.mechanism=SCRAM-SHA-512
                -X sasl.username=bench -X sasl.password=bench-password-not-secret
                -X "ssl.ca.location=$WORK/ca.pem")
        fi
        topic="security-$mode-$run"
        measure "$mode" "$run" produce-1k-p8 produce --topic "$topic" --partitions 8 --record-size 1024 \
            --acks all --records "$RECORDS" --duration 60
        measure "$mode" "$run" consume-1k-p8 consume --topic "$topic"
        measure "$mode" "$run" e2e-1k-p8 e2e --topic "$topic-e2e" --partitions 8 --record-size 1024 --acks all \
            --rate "$E2E_RATE" --duration "$E2E_SECONDS" --warmup 3
        stop_broker
        rm -rf "$WORK/data"
    done
done

TABLE="$(python3 - "$RESULTS" <<'EOF'
import json, statistics, sys
results = [json.loads(l) for l in open(sys.argv[1])]
modes = [("plaintext", "PLAINTEXT"), ("sasl_ssl", "SASL_SSL (SCRAM-SHA-512)")]

def runs(mode, name):
    return [r for r in results if r["security_mode"] == mode and r["name"] == name]

def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None

def mibs(mode, name):
    values = [r.get("mib_per_s") for r in runs(mode, name)]
    values = [v for v in values if v is not None]
    if not values:
        return "failed", None
    return f"{med(values):.0f} ({min(values):.0f}–{max(values):.0f})", med(values)

def cpu_per_gib(mode, name, who="broker"):
    per = [r[f"{who}_cpu_s"] / (r["bytes"] / 2**30) for r in runs(mode, name)
           if r.get("bytes") and r.get(f"{who}_cpu_s") is not None]
    return f"{med(per):.2f}" if per else "–"

def e2e(mode, path):
    values = []
    for r in runs(mode, "e2e-1k-p8"):
        v = r
        for k in path:
            v = v.get(k, {}) if isinstance(v, dict) else {}
        values.append(v if isinstance(v, (int, float)) else None)
    m = med(values)
    return "–" if m is None else f"{m:.2f}"

def failures(mode):
    bad = [r["name"] for r in results if r["security_mode"] == mode and not r.get("ok")]
    return ", ".join(sorted(set(bad))) or "none"

def ratio(value, base):
    return f"{value / base:.2f}×" if value and base else "–"

print("| listener | produce MiB/s | vs PLAINTEXT | CPU s per GiB produced: broker / client | consume MiB/s "
      "| vs PLAINTEXT | CPU s per GiB read: broker / client | e2e ack p50 / p99 (ms) | e2e p50 / p99 (ms) | failed runs |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
base = {}
for mode, label in modes:
    produce, p = mibs(mode, "produce-1k-p8")
    consume, c = mibs(mode, "consume-1k-p8")
    if mode == "plaintext":
        base = {"p": p, "c": c}
    print(f"| {label} | {produce} | {ratio(p, base.get('p'))} "
          f"| {cpu_per_gib(mode, 'produce-1k-p8')} / {cpu_per_gib(mode, 'produce-1k-p8', 'client')} "
          f"| {consume} | {ratio(c, base.get('c'))} "
          f"| {cpu_per_gib(mode, 'consume-1k-p8')} / {cpu_per_gib(mode, 'consume-1k-p8', 'client')} "
          f"| {e2e(mode, ['produce', 'ack_latency_ms', 'p50'])} / {e2e(mode, ['produce', 'ack_latency_ms', 'p99'])} "
          f"| {e2e(mode, ['e2e_latency_ms', 'p50'])} / {e2e(mode, ['e2e_latency_ms', 'p99'])} | {failures(mode)} |")
EOF
)"

CPU_MODEL="$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
REPORT="$WORK/report.md"
{
    echo "<!-- security:begin -->"
    echo "## Security overhead (SASL_SSL against PLAINTEXT)"
    echo
    echo "\`bench/security.sh\` on $(date -u +%Y-%m-%d): $(nproc) cores ($CPU_MODEL), one broker"
    echo "(embedded metadata, default flush policy) with a PLAINTEXT and a SASL_SSL listener,"
    echo "started afresh for each listener in each of $REPEAT repetitions. The SASL_SSL client"
    echo "is strata-bench's librdkafka over OpenSSL (RSA 2048 certificate, SCRAM-SHA-512); the"
    echo "broker's side is rustls with aws-lc-rs. Each repetition: $RECORDS records of 1 KiB,"
    echo "acks=all, 8 partitions, produced then read back; then an end-to-end run at $E2E_RATE MiB/s"
    echo "for $E2E_SECONDS s (3 s warm-up). Throughput is the median with the range in brackets;"
    echo "the other columns are medians. Client and broker share the two cores, so the"
    echo "encryption is paid twice (client and broker) out of the same CPU."
    echo
    echo "$TABLE"
    echo
    echo "Command: \`RECORDS=$RECORDS REPEAT=$REPEAT E2E_SECONDS=$E2E_SECONDS E2E_RATE=$E2E_RATE bench/security.sh\`."
    echo "<!-- security:end -->"
} >"$REPORT"
write_section security "$REPORT"

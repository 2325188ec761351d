#!/usr/bin/env bash
# Partition-scale benchmark: for each partition count, creates that many partitions
# (topics of 10, 100 topics per CreateTopics request) on one broker, then restarts the same
# data directory with the baseline and the new binary in turn (interleaved, RESTARTS each)
# and times how long each takes to listen and to serve Metadata with a leader for every
# partition. Also: descriptors, RSS, idle CPU, and with etcd its requests and database size.
# Runs with the embedded store and with etcd. Writes the "scale" section of
# docs/benchmarks.md.
#
#   BASE=/tmp/strata-base/strata bench/scale.sh            # about 10 minutes on 2 cores
#   PARTITIONS="1000" RESTARTS=1 MODES=embedded bench/scale.sh   # smoke run
#   REPORT_ONLY=results.jsonl bench/scale.sh   # rewrite the section from saved result lines
#
# The baseline's creation is timed only up to BASE_CREATE_MAX partitions (1000; it takes
# minutes at 5000 on this machine), its restarts only up to BASE_RESTART_MAX (5000; it
# holds three descriptors per partition, so 10000 passes a 20000 open-files limit).
# Asserts nothing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-$ROOT/docs/benchmarks.md}"
PARTITIONS="${PARTITIONS:-1000 5000 10000}"
RESTARTS="${RESTARTS:-3}"
MODES="${MODES:-embedded etcd}"
BASE_CREATE_MAX="${BASE_CREATE_MAX:-1000}"
BASE_RESTART_MAX="${BASE_RESTART_MAX:-5000}"
BASE="${BASE:-/tmp/strata-base/strata}"

SCRIPT=scale.sh
WORK="$(mktemp -d -t strata-scale-bench.XXXXXX)"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
if [ -z "${NEW:-}" ] && [ -z "${REPORT_ONLY:-}" ]; then
    log "building strata (release)"
    cargo build --release -p strata-broker
    NEW="$TARGET/release/strata"
fi
[ -x "$BASE" ] || die "no baseline binary at $BASE (set BASE)"
python3 -c 'import confluent_kafka' 2>/dev/null || die "PyPI confluent-kafka is needed (scripts/install-deps.sh)"

ETCD_PID=""
cleanup() {
    stop_pid "$ETCD_PID" etcd
    rm -rf "$WORK"
}
trap cleanup EXIT

RESULTS="$WORK/results.jsonl"
if [ -n "${REPORT_ONLY:-}" ]; then
    grep '^{' "$REPORT_ONLY" >"$RESULTS"
    MODES=""
fi
for mode in $MODES; do
    etcd_url=""
    if [ "$mode" = etcd ]; then
        command -v etcd >/dev/null || die "etcd is not installed (scripts/install-deps.sh installs it)"
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
        etcd_url="http://127.0.0.1:$ETCD_PORT"
    fi
    for n in $PARTITIONS; do
        df -h / | awk 'NR == 2 && $5 + 0 > 90 { exit 1 }' || die "the disk is over 90% full"
        extra=()
        [ "$n" -le "$BASE_CREATE_MAX" ] && extra+=(--base-create)
        [ "$n" -gt "$BASE_RESTART_MAX" ] && extra+=(--no-base-restart)
        [ -n "$etcd_url" ] && extra+=(--etcd "$etcd_url")
        log "$mode: $n partitions"
        python3 bench/scale.py --base "$BASE" --new "$NEW" --partitions "$n" \
            --restarts "$RESTARTS" "${extra[@]}" | tee -a "$RESULTS" >&2
    done
    stop_pid "$ETCD_PID" etcd
    ETCD_PID=""
done

REPORT="$WORK/report.md"
python3 - "$RESULTS" "$REPORT" "$(nproc)" "$(date -u +%Y-%m-%d)" \
    "${COMMAND:-PARTITIONS=\"$PARTITIONS\" RESTARTS=$RESTARTS MODES=\"$MODES\" BASE_RESTART_MAX=$BASE_RESTART_MAX BASE=$BASE bench/scale.sh}" <<'PY'
import json, statistics, sys
results, report, cores, day, command = sys.argv[1:]
rows = [json.loads(l) for l in open(results) if l.startswith("{")]

def fmt(v):
    return str(int(v)) if float(v).is_integer() else f"{v:.3g}" if v < 100 else f"{v:.0f}"

def stat(values):
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    med = statistics.median(values)
    if len(values) == 1:
        return fmt(med)
    return f"{fmt(med)} ({fmt(min(values))}–{fmt(max(values))})"

out = []
out.append("<!-- scale:begin (written by bench/scale.sh; edit the script, not this section) -->")
out.append("## Partitions per broker")
out.append("")
out.append(f"Machine: {cores} cores shared with other work, one broker, loopback; {day}. "
           f"Command: `{command}`. Before: the baseline binary; after: this branch. "
           "Each partition count is created once by each binary on an empty data directory "
           "(topics of 10 partitions, 100 topics per CreateTopics request); then the same data "
           "directory is restarted by the two binaries in turn (interleaved). Restart times are "
           "medians (min–max): from exec to the Kafka port accepting, and to a Metadata answer "
           "with a leader for every partition. Descriptors and RSS are read from /proc while "
           "serving and after an idle interval. A partition the new binary creates is a "
           "directory without segment files until it is written; before the timed restarts "
           "the baseline starts once, untimed, on the new binary's directory (creating them), "
           "so both binaries' restarts open segment files, except where the baseline is not "
           "restarted (10000), where the new binary opens its own empty directories. "
           "The baseline creates only up to "
           "BASE_CREATE_MAX partitions (its creation of 5000 took 148 s in a hand run on this "
           "machine) and restarts only up to BASE_RESTART_MAX (at 10000 it needs 30000 "
           "descriptors, over this machine's limit of 20000); `–` marks what was not run. "
           "With RESTARTS=1 each cell is one run: the machine was shared and loaded, so read "
           "the ratios, not the absolute times.")
out.append("")
for mode in ("embedded", "etcd"):
    mrows = [r for r in rows if r["metadata"] == mode]
    if not mrows:
        continue
    out.append(f"### {mode} metadata")
    out.append("")
    out.append("| partitions | create before s | create after s | restart to listening before s | after s | ratio | restart to metadata before s | after s | fds serving before | after | fds idle after | RSS MiB before | after | idle CPU % before | after |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n in sorted({r["partitions"] for r in mrows}):
        def pick(phase, label, key):
            return [r.get(key) for r in mrows if r["partitions"] == n and r["phase"] == phase
                    and r["label"] == label and "error" not in r]
        errors = [r["error"] for r in mrows if r["partitions"] == n and "error" in r]
        lb, la = pick("restart", "before", "listen_s"), pick("restart", "after", "listen_s")
        ratio = "–"
        if lb and la:
            ratio = f"{statistics.median(la) / statistics.median(lb):.2f}"
        before_listen = stat(lb) if lb else ("failed: " + errors[0] if errors else "–")
        out.append("| " + " | ".join([
            str(n), stat(pick("create", "before", "create_s")), stat(pick("create", "after", "create_s")),
            before_listen, stat(la), ratio,
            stat(pick("restart", "before", "metadata_s")), stat(pick("restart", "after", "metadata_s")),
            stat(pick("restart", "before", "fds_serving")), stat(pick("restart", "after", "fds_serving")),
            stat(pick("restart", "after", "fds_idle")),
            stat(pick("restart", "before", "rss_mib")), stat(pick("restart", "after", "rss_mib")),
            stat(pick("restart", "before", "idle_cpu_pct")), stat(pick("restart", "after", "idle_cpu_pct")),
        ]) + " |")
    out.append("")
    if mode == "etcd":
        out.append("etcd requests (Range + Txn + Put + lease calls) and its database size:")
        out.append("")
        out.append("| partitions | create before | create after | restart before | restart after | idle req/s before | after | etcd DB bytes |")
        out.append("|---|---|---|---|---|---|---|---|")
        for n in sorted({r["partitions"] for r in mrows}):
            def req(phase, label, key):
                return [r[key]["requests"] if isinstance(r.get(key), dict) else None
                        for r in mrows if r["partitions"] == n and r["phase"] == phase and r["label"] == label]
            def val(phase, label, key):
                return [r.get(key) for r in mrows if r["partitions"] == n and r["phase"] == phase and r["label"] == label]
            out.append("| " + " | ".join([
                str(n), stat(req("create", "before", "etcd_create")), stat(req("create", "after", "etcd_create")),
                stat(req("restart", "before", "etcd_restart")), stat(req("restart", "after", "etcd_restart")),
                stat(val("restart", "before", "etcd_idle_per_s")), stat(val("restart", "after", "etcd_idle_per_s")),
                stat(val("restart", "after", "etcd_db_bytes")),
            ]) + " |")
        out.append("")
out.append("""Where the time goes (`strace -c` on this machine, after; the runs are single and the
machine was shared, so creation times moved by 2x between two runs of the same binaries):

- **Creation, embedded.** A new partition's first segment is deferred: its `.log`, `.index`
  and `.timeindex` are created by its first append, so creating a partition is one
  `mkdir` and no file. Creating 1000 partitions under `strace -c -f`: before 11,012
  `openat`, 4000 `unlink`, 3000 `ftruncate`, 2000 `pwrite64`, 5012 `close`; after 7009
  `openat`, 1000 `unlink`, none of the others, 2009 `close` (1202 `mkdir` both). Of the 7009
  `openat`, 5000 fail: probes for state files (checkpoints and the like) that a directory
  the broker has just made cannot hold; there are also four `getdents64` per partition: opening a
  directory the broker just made could skip them; not done. A partition written once
  has its three files, as before, and restarts the same way.
- **Creation and restart, etcd.** A created topic's id is fresh, so its partitions open
  with no manifest read (etcd `Range` at creation: 1205 → 205 at 1000 partitions). At
  start-up one keys-only range over `<prefix>/manifests/` (in pages of 10,000 keys) says
  which topics have manifest roots; only those read theirs, with one range per topic
  (in pages of 100 roots), not one per partition. A topic learnt from another broker
  reads its roots per topic too. Restart `Range` count: 5023 → 24 at 5000 partitions,
  24 at 10,000.
- **Restart, embedded.** The manifest read per partition was a file probe; it is now one
  listing of the manifest directory. What is left grows with partitions (directory
  listings and opens of each partition's files, building the registry).
- **Descriptors.** Unchanged: they follow the partitions written within
  `log_release_idle_files_ms`, not a cache. A created or restarted partition holds none;
  a written one holds three until it is idle for that long and fsynced. The table
  measures partitions never written. A keyed producer writing all 10,000 partitions
  within 30 s needs 30,000 descriptors, and an append that cannot open its files
  (EMFILE) fails.
- **Goals.** In these runs creation of 5000 partitions took 2.6–3.2 s embedded and
  2.6–4.7 s with etcd (goal ≤ 5 s; before: 6.84 s and 17.9 s in the previous
  measurement), and restart to listening 0.76–0.97 s embedded and 0.95–1.06 s with etcd at
  5000, 0.83–1.03 s at 10,000 (goal ≤ 2 s). The descriptor goal (a bound by a cache,
  not by partitions written) is not met. The 30,000-partitions-across-three-brokers
  scenario was not run.
- **Idle CPU.** Grows with partitions: housekeeping visits every partition each second
  and sets its Prometheus gauges (`with_label_values` is the top user-space symbol), and
  the metadata round compares every partition.""")
out.append("")
out.append("<!-- scale:end -->")
open(report, "w").write("\n".join(out) + "\n")
PY
write_section scale "$REPORT"

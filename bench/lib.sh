# Shell helpers shared by the benchmark scripts (bench/run.sh, bench/tiering.sh,
# bench/compaction.sh). Source it after setting SCRIPT (the name in log lines) and WORK
# (a temp dir); the broker helpers use BROKER_CMD, BROKER_ENV (may be empty), HTTP_PORT
# and set BROKER_PID; the metric helpers use METRICS_URL.

log() { printf '[%s %s] %s\n' "$SCRIPT" "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "$*"; exit 1; }

# stop_pid PID NAME: SIGTERM, up to 30 s, then SIGKILL.
stop_pid() {
    local pid="$1" name="$2"
    [ -n "$pid" ] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 300); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "$name $pid still running 30 s after SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
}
BROKER_PID=""
stop_broker() { stop_pid "$BROKER_PID" broker; BROKER_PID=""; }
# stop_tree PID: a background job and what it started (children first), by PID.
stop_tree() {
    local child
    for child in $(pgrep -P "$1" 2>/dev/null || true); do stop_tree "$child"; done
    stop_pid "$1" "background client"
}

# A loopback port nothing listens on, below the kernel's ephemeral range (32768 and up by
# default), where a client socket in TIME_WAIT would make a server refuse it.
free_port() {
    local port
    for _ in $(seq 1 100); do
        port=$((20000 + RANDOM % 12000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    die "no free port found"
}

# start_broker: runs BROKER_ENV BROKER_CMD in the background (log: $WORK/strata.N.log)
# and waits for /readyz.
BROKER_STARTS=0
start_broker() {
    BROKER_STARTS=$((BROKER_STARTS + 1))
    local out="$WORK/strata.$BROKER_STARTS.log"
    log "starting: ${BROKER_ENV[*]:-} ${BROKER_CMD[*]}"
    env NO_COLOR=1 "${BROKER_ENV[@]}" "${BROKER_CMD[@]}" >"$out" 2>&1 &
    BROKER_PID=$!
    for _ in $(seq 1 300); do
        if curl -fsS "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null 2>&1; then
            log "broker $BROKER_PID ready"
            return 0
        fi
        kill -0 "$BROKER_PID" 2>/dev/null || { cat "$out" >&2; die "the broker exited during start-up"; }
        sleep 0.1
    done
    cat "$out" >&2
    die "broker not ready after 30 s"
}

CLK_TCK="$(getconf CLK_TCK)"
# cpu PID: CPU seconds (utime + stime, all threads) the process has used so far.
cpu() {
    if [ -r "/proc/$1/stat" ]; then
        awk -v tck="$CLK_TCK" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / tck }' "/proc/$1/stat"
    else
        echo "nan"
    fi
}
# peak_rss_kib PID: the process's peak resident set size so far (VmHWM), in KiB.
peak_rss_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo nan; }

snapshot() { curl -fsS "$METRICS_URL" >"$WORK/metrics.$1" || die "could not read $METRICS_URL"; }
# msum SNAPSHOT NAME [LABEL=VALUE ...]: sum of the series of NAME carrying every label given.
msum() {
    local file="$WORK/metrics.$1" name="$2"; shift 2
    awk -v name="$name" -v want="$*" '
        /^#/ { next }
        {
            base = $1; sub(/\{.*/, "", base)
            if (base != name) next
            n = split(want, w, " ")
            for (i = 1; i <= n; i++) {
                eq = index(w[i], "=")
                if (index($1, substr(w[i], 1, eq - 1) "=\"" substr(w[i], eq + 1) "\"") == 0) next
            }
            sum += $NF
        }
        END { printf "%.0f\n", sum }' "$file"
}
# mdelta BEFORE AFTER NAME [LABEL=VALUE ...]
mdelta() {
    local before="$1" after="$2"; shift 2
    echo $(( $(msum "$after" "$@") - $(msum "$before" "$@") ))
}
calc() { awk "BEGIN { printf \"$1\n\", $2 }"; }
# jget FILE PATH: a field (dotted path) of the last JSON line in FILE, "nan" if missing.
jget() {
    python3 - "$1" "$2" <<'EOF'
import json, sys
lines = [l for l in open(sys.argv[1]) if l.startswith('{')]
value = json.loads(lines[-1]) if lines else {}
for key in sys.argv[2].split('.'):
    if isinstance(value, list) and key.isdigit() and int(key) < len(value):
        value = value[int(key)]
    else:
        value = value.get(key) if isinstance(value, dict) else None
print('nan' if value is None else value)
EOF
}

# write_section NAME REPORT: puts REPORT (a file starting with "<!-- NAME:begin" and ending
# with "<!-- NAME:end -->") in place of that section of $OUT, or appends it; then prints it.
write_section() {
    local name="$1" report="$2"
    if [ -f "$OUT" ] && grep -q "^<!-- $name:begin" "$OUT"; then
        python3 - "$OUT" "$report" "$name" <<'PY'
import re, sys
out, report, name = sys.argv[1], open(sys.argv[2]).read(), sys.argv[3]
text = open(out).read()
start = re.search(rf'^<!-- {name}:begin', text, re.M).start()
end_marker = f'<!-- {name}:end -->'
end = text.index(end_marker, start) + len(end_marker)
if text[end:end + 1] == '\n':
    end += 1
open(out, 'w').write(text[:start] + report + text[end:])
PY
    else
        { echo; cat "$report"; } >>"$OUT"
    fi
    log "report written to $OUT"
    cat "$report" >&2
}

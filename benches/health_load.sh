#!/usr/bin/env bash
# benches/health_load.sh - CPU cost of ecslb's active health checks.
#
# One nginx process (core 1) listens on TARGETS loopback ports and answers
# GET /health with 200 "ok". ecslb (one worker, core 0) has one target group
# with all of them as static targets and an HTTP health check every INTERVAL
# seconds, and no client traffic. Once every target is healthy we measure
# ecslb's CPU time (utime+stime from /proc) over DURATION seconds and report
# it as a share of one core and per probe, plus ecslb's RSS. The result is
# printed and saved to benches/out/health-load-<date>.txt (git-ignored).
#
# Environment:
#   TARGETS=1000         number of targets (nginx listen ports)
#   INTERVAL=5           health-check interval, seconds
#   DURATION=30          measurement window, seconds
#   SETTLE=5             seconds to wait after all are healthy, before measuring
#   HEALTHY_TIMEOUT=60   seconds to wait for all targets to become healthy
#   BASE_PORT=20000      target ports are the first free ones from here up
#   ECSLB_BIN=path       use this ecslb binary; skip `cargo build --release`
#   KEEP_TMP=1           keep the temp dir (configs, logs) for debugging
#
# All traffic stays on 127.0.0.1; every wait has a time limit; every process
# started is stopped on exit, error or Ctrl-C.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT_DIR="$ROOT/benches/out"

TARGETS=${TARGETS:-1000}
INTERVAL=${INTERVAL:-5}
DURATION=${DURATION:-30}
SETTLE=${SETTLE:-5}
HEALTHY_TIMEOUT=${HEALTHY_TIMEOUT:-60}
BASE_PORT=${BASE_PORT:-20000}
KEEP_TMP=${KEEP_TMP:-0}
BUILD_TIMEOUT=${BUILD_TIMEOUT:-1200}
READY_TIMEOUT=15

LOG_TAG=health-load
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

for v in TARGETS INTERVAL DURATION HEALTHY_TIMEOUT BASE_PORT; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
[[ $SETTLE =~ ^[0-9]+$ ]] || die "SETTLE must be a non-negative integer (got '$SETTLE')"

# pause SECONDS : sleep, but let INT/TERM traps run at once.
pause() {
    sleep "$1" &
    wait $! || true
}

# --------------------------------------------------------------------------
# 1. Tools and ecslb binary
# --------------------------------------------------------------------------
install_missing nginx curl python3 setsid getconf

PIN_ECSLB=() PIN_NGINX=()
if command -v taskset >/dev/null 2>&1 && (($(nproc) >= 2)); then
    PIN_ECSLB=(taskset -c 0)
    PIN_NGINX=(taskset -c 1)
else
    log "warning: taskset missing or < 2 cores; running unpinned"
fi

if [[ -z ${ECSLB_BIN:-} ]]; then
    log "building ecslb: cargo build --release (in $ROOT)"
    (cd "$ROOT" && timeout "$BUILD_TIMEOUT" cargo build --release) ||
        die "cargo build --release failed; set ECSLB_BIN=... to use a prebuilt binary"
    ECSLB_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/ecslb
    [[ $ECSLB_BIN == /* ]] || ECSLB_BIN=$ROOT/$ECSLB_BIN
fi
[[ -x $ECSLB_BIN ]] || die "ECSLB_BIN '$ECSLB_BIN' is not executable"

# --------------------------------------------------------------------------
# 2. File descriptors: nginx holds TARGETS listening sockets, and ecslb may
#    have up to TARGETS probe connections open at once.
# --------------------------------------------------------------------------
NEED_NOFILE=$((2 * TARGETS + 1024))
if (($(ulimit -n) < NEED_NOFILE)); then
    ulimit -n "$NEED_NOFILE" 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fi
(($(ulimit -n) >= NEED_NOFILE)) ||
    die "ulimit -n is $(ulimit -n) (hard $(ulimit -Hn)); need $NEED_NOFILE for $TARGETS targets"
log "ulimit -n: $(ulimit -n)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ecslb-health-load.XXXXXX")
chmod 755 "$WORK"

# --------------------------------------------------------------------------
# 3. Ports: TARGETS target ports from BASE_PORT up (outside the ephemeral
#    range, so they cannot clash with probe source ports), plus 3 more.
# --------------------------------------------------------------------------
mapfile -t PORTS < <(python3 - "$BASE_PORT" "$((TARGETS + 3))" <<'PY'
import socket, sys
base, need = int(sys.argv[1]), int(sys.argv[2])
try:
    lo, hi = map(int, open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
except OSError:
    lo, hi = 32768, 60999
found, p = [], base
while len(found) < need and p <= 65535:
    if not lo <= p <= hi:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", p))
            found.append(p)
        except OSError:
            pass
        finally:
            s.close()
    p += 1
print("\n".join(map(str, found)))
PY
)
((${#PORTS[@]} == TARGETS + 3)) || die "found only ${#PORTS[@]} free ports from $BASE_PORT up"
TPORTS=("${PORTS[@]:0:TARGETS}")
LISTEN_PORT=${PORTS[TARGETS]}
ADMIN_PORT=${PORTS[TARGETS + 1]}
STATUS_PORT=${PORTS[TARGETS + 2]}
log "target ports ${TPORTS[0]}..${TPORTS[TARGETS - 1]}; listener $LISTEN_PORT," \
    "admin $ADMIN_PORT, nginx status $STATUS_PORT"

# --------------------------------------------------------------------------
# 4. nginx: one process, one server with TARGETS listen lines.
# --------------------------------------------------------------------------
NDIR="$WORK/nginx"
mkdir -p "$NDIR"
for d in client_body proxy fastcgi uwsgi scgi; do mkdir -p "$NDIR/$d"; done
HAS_STUB=0
nginx -V 2>&1 | grep -q http_stub_status_module && HAS_STUB=1
{
    echo "daemon off;"
    echo "master_process off;   # a single process: the one we start"
    echo "worker_processes 1;"
    echo "worker_rlimit_nofile $NEED_NOFILE;"
    echo "pid $NDIR/nginx.pid;"
    echo "error_log $NDIR/error.log warn;"
    echo "events { worker_connections $((TARGETS + 1024)); }"
    echo "http {"
    echo "    access_log off;"
    echo "    client_body_temp_path $NDIR/client_body;"
    echo "    proxy_temp_path $NDIR/proxy;"
    echo "    fastcgi_temp_path $NDIR/fastcgi;"
    echo "    uwsgi_temp_path $NDIR/uwsgi;"
    echo "    scgi_temp_path $NDIR/scgi;"
    echo "    server {"
    for p in "${TPORTS[@]}"; do echo "        listen 127.0.0.1:$p;"; done
    echo '        location /health { return 200 "ok"; }'
    echo "        location / { return 404; }"
    echo "    }"
    if ((HAS_STUB)); then
        echo "    server {"
        echo "        listen 127.0.0.1:$STATUS_PORT;"
        echo "        location = /status { stub_status; }"
        echo "    }"
    fi
    echo "}"
} >"$NDIR/nginx.conf"
chmod -R 755 "$NDIR"
NGINX_ARGS=(-p "$NDIR/" -c "$NDIR/nginx.conf")
nginx -h 2>&1 | grep -qE '^ *-e ' && NGINX_ARGS+=(-e "$NDIR/error.log")
log "starting nginx with $TARGETS listen ports (${PIN_NGINX[*]:-unpinned})"
start_bg "$NDIR/stdout.log" "${PIN_NGINX[@]}" nginx "${NGINX_ARGS[@]}"
NGINX_PID=$LAST_PID

deadline=$((SECONDS + READY_TIMEOUT))
for p in "${TPORTS[0]}" "${TPORTS[TARGETS / 2]}" "${TPORTS[TARGETS - 1]}"; do
    until body=$(curl -fsS -m 1 "http://127.0.0.1:$p/health" 2>/dev/null); do
        if ! is_alive "$NGINX_PID" || ((SECONDS >= deadline)); then
            tail -n 20 "$NDIR/error.log" "$NDIR/stdout.log" >&2 2>/dev/null || true
            die "nginx is not answering on port $p"
        fi
        sleep 0.2
    done
    [[ $body == ok ]] || die "nginx port $p answered '$body'"
done

# nginx_counters : "accepts requests" from stub_status (empty without it).
nginx_counters() {
    ((HAS_STUB)) || return 0
    curl -fsS -m 2 "http://127.0.0.1:$STATUS_PORT/status" 2>/dev/null |
        awk 'NR == 3 { print $1, $3 }'
}

# --------------------------------------------------------------------------
# 5. ecslb
# --------------------------------------------------------------------------
EDIR="$WORK/ecslb"
mkdir -p "$EDIR"
CONF="$EDIR/ecslb.toml"
{
    echo "# generated by benches/health_load.sh"
    echo "[admin]"
    echo "listen = \"127.0.0.1:$ADMIN_PORT\""
    echo
    echo "[[listeners]]"
    echo "name = \"bench\""
    echo "bind = \"127.0.0.1:$LISTEN_PORT\""
    echo "protocol = \"http\""
    echo "default_action = { forward = \"fleet\" }"
    echo
    echo "[target_groups.fleet]"
    echo "health_check = { path = \"/health\", interval = \"${INTERVAL}s\", timeout = \"2s\"," \
        "healthy_threshold = 2, unhealthy_threshold = 2 }"
    printf 'discovery = { static = ['
    sep=""
    for p in "${TPORTS[@]}"; do
        printf '%s"127.0.0.1:%s"' "$sep" "$p"
        sep=", "
    done
    printf '] }\n'
} >"$CONF"

if ! timeout 30 "$ECSLB_BIN" check -c "$CONF" >"$EDIR/check.log" 2>&1; then
    tail -n 20 "$EDIR/check.log" >&2
    die "ecslb check rejected the generated config ($CONF)"
fi

log "starting ecslb --workers 1 (${PIN_ECSLB[*]:-unpinned})"
ECSLB_LOG=${ECSLB_LOG:-warn} start_bg "$EDIR/stdout.log" \
    "${PIN_ECSLB[@]}" "$ECSLB_BIN" run -c "$CONF" --workers 1
ECSLB_PID=$LAST_PID
# setsid/taskset exec in place, so this is ecslb itself; check anyway.
for ((i = 0; i < 50; i++)); do
    [[ $(cat "/proc/$ECSLB_PID/comm" 2>/dev/null) == ecslb ]] && break
    sleep 0.1
done
[[ $(cat "/proc/$ECSLB_PID/comm" 2>/dev/null) == ecslb ]] || {
    tail -n 20 "$EDIR/stdout.log" >&2 2>/dev/null || true
    die "ecslb did not start (pid $ECSLB_PID)"
}

# target_states : "healthy total initial unhealthy other" of group fleet.
target_states() {
    curl -fsS -m 5 "http://127.0.0.1:$ADMIN_PORT/v1/targets" 2>/dev/null | python3 -c '
import collections, json, sys
try:
    doc = json.load(sys.stdin)
except ValueError:
    sys.exit(1)
n = collections.Counter()
for g in doc.get("target_groups", []):
    if g.get("name") == "fleet":
        for t in g.get("targets", []):
            n[t.get("state")] += 1
total = sum(n.values())
other = total - n["healthy"] - n["initial"] - n["unhealthy"]
print(n["healthy"], total, n["initial"], n["unhealthy"], other)
'
}

log "waiting up to ${HEALTHY_TIMEOUT}s for $TARGETS healthy targets"
start=$SECONDS
deadline=$((SECONDS + HEALTHY_TIMEOUT))
healthy=0
last=""
while :; do
    is_alive "$ECSLB_PID" || {
        tail -n 20 "$EDIR/stdout.log" >&2 2>/dev/null || true
        die "ecslb exited"
    }
    if states=$(target_states) && [[ -n $states ]]; then
        read -r healthy total initial unhealthy other <<<"$states"
        if [[ $states != "$last" ]]; then
            log "  $((SECONDS - start))s: healthy $healthy/$total" \
                "(initial $initial, unhealthy $unhealthy, other $other)"
            last=$states
        fi
        ((healthy == TARGETS)) && break
    fi
    ((SECONDS < deadline)) || die "only $healthy/$TARGETS targets healthy after ${HEALTHY_TIMEOUT}s"
    pause 1
done
TIME_TO_HEALTHY=$((SECONDS - start))

# --------------------------------------------------------------------------
# 6. Measurement
# --------------------------------------------------------------------------
HZ=$(getconf CLK_TCK)

status_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
now_s() { date +%s.%N; }

if ((SETTLE > 0)); then
    log "all healthy after ${TIME_TO_HEALTHY}s; settling ${SETTLE}s"
    pause "$SETTLE"
fi
log "measuring ${DURATION}s"
n0=$(nginx_counters)
e0=$(cpu_ticks "$ECSLB_PID")
g0=$(cpu_ticks "$NGINX_PID")
t0=$(now_s)
pause "$DURATION"
e1=$(cpu_ticks "$ECSLB_PID")
g1=$(cpu_ticks "$NGINX_PID")
t1=$(now_s)
n1=$(nginx_counters)
is_alive "$ECSLB_PID" || die "ecslb died during the measurement"
RSS_KB=$(status_kb "$ECSLB_PID" VmRSS)
HWM_KB=$(status_kb "$ECSLB_PID" VmHWM)
THREADS=$(status_kb "$ECSLB_PID" Threads)
read -r healthy_end total_end _ <<<"$(target_states || echo "? ?")"

# Probe count seen by nginx: counter deltas minus the second status request.
OBSERVED=""
CONNS=""
if [[ -n $n0 && -n $n1 ]]; then
    read -r a0 r0 <<<"$n0"
    read -r a1 r1 <<<"$n1"
    OBSERVED=$((r1 - r0 - 1))
    CONNS=$((a1 - a0 - 1))
fi

RESULT=$(awk -v e0="$e0" -v e1="$e1" -v g0="$g0" -v g1="$g1" -v hz="$HZ" \
    -v t0="$t0" -v t1="$t1" -v n="$TARGETS" -v iv="$INTERVAL" \
    -v obs="$OBSERVED" -v conns="$CONNS" -v rss="$RSS_KB" -v hwm="$HWM_KB" 'BEGIN {
    el = t1 - t0; cpu = (e1 - e0) / hz; ncpu = (g1 - g0) / hz
    rate = n / iv; expected = rate * el
    printf "probes/s expected:        %.1f  (%d targets / %ds)\n", rate, n, iv
    if (obs != "")
        printf "probes/s seen by nginx:   %.1f  (%d requests, %d connections in %.1fs)\n", \
            obs / el, obs, conns, el
    printf "window:                   %.1f s\n", el
    printf "ecslb CPU time:           %.2f s  (utime+stime, %d ticks at %d Hz)\n", \
        cpu, e1 - e0, hz
    printf "ecslb CPU share:          %.2f %% of one core\n", 100 * cpu / el
    printf "ecslb CPU per probe:      %.1f us  (per expected probe)\n", 1e6 * cpu / expected
    if (obs != "" && obs > 0)
        printf "                          %.1f us  (per probe seen by nginx)\n", 1e6 * cpu / obs
    printf "ecslb RSS:                %.1f MiB  (VmRSS; peak VmHWM %.1f MiB)\n", \
        rss / 1024, hwm / 1024
    printf "nginx CPU share:          %.2f %% of one core  (%.2f s)\n", 100 * ncpu / el, ncpu
}')

# --------------------------------------------------------------------------
# 7. Report
# --------------------------------------------------------------------------
mkdir -p "$OUT_DIR"
OUT="$OUT_DIR/health-load-$(date +%Y%m%d-%H%M%S).txt"
{
    echo "ecslb health-check load - $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "git: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)" \
        "$(git -C "$ROOT" diff --quiet HEAD -- src 2>/dev/null || echo '(src modified)')" \
        " $(host_line)"
    echo "ecslb: $(timeout 5 "$ECSLB_BIN" --version 2>/dev/null | head -n 1 || true)," \
        "--workers 1 ($THREADS threads), ${PIN_ECSLB[*]:-unpinned}; nginx: $(nginx -v 2>&1 | head -n 1)," \
        "1 process, ${PIN_NGINX[*]:-unpinned}"
    echo "$TARGETS targets (127.0.0.1:${TPORTS[0]}..${TPORTS[TARGETS - 1]}), HTTP GET /health" \
        "every ${INTERVAL}s, timeout 2s, thresholds 2/2; no client traffic"
    echo "all healthy after ${TIME_TO_HEALTHY}s; settle ${SETTLE}s; healthy at end: ${healthy_end}/${total_end}"
    echo
    echo "$RESULT"
} >"$OUT"
echo
cat "$OUT"
echo
log "written to ${OUT#"$ROOT"/}"
[[ $healthy_end == "$TARGETS" ]] || die "only $healthy_end/$TARGETS targets healthy at the end"

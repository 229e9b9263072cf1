#!/usr/bin/env bash
# benches/load.sh - compare ecslb with nginx and HAProxy as L7 round-robin
# proxies on loopback.
#
# Three nginx-served backends (core 1) answer GET / with "hello, world\n".
# Each proxy in turn runs with one worker pinned to core 0 and is loaded with
# wrk (one thread, also on core 1). We report requests/s, p99 latency and
# errors in a table, with the proxy's CPU time per request (user and system, from
# /proc), printed and saved to benches/out/load-<date>.txt.
#
# Environment:
#   DURATION=10          seconds of measured load per proxy
#   CONNECTIONS=50       concurrent wrk connections
#   WARMUP=2             seconds of warm-up load per proxy
#   ROUNDS=1             measure every proxy this many times, interleaved (the order
#                        rotates each round); with more than one, the report adds
#                        each proxy's median and, round by round, ecslb's
#                        requests/s and p99 against the better other proxy's
#                        (benches/rounds.py; this machine's noise moves single runs
#                        by several percent)
#   PROXIES="ecslb ecslb-poll nginx haproxy"   which proxies to run, in order;
#                        "ecslb-poll" is ecslb with `--poll-before-sleep $POLL_WINDOW`
#                        (it polls for events that long after its last work before
#                        sleeping), "ecslb-nometrics" ecslb with
#                        `[metrics] enabled = false` (the cost of metrics)
#   POLL_WINDOW=50us     ecslb-poll's --poll-before-sleep
#   ECSLB_BIN=path       use this ecslb binary; skip `cargo build --release`
#   READY_TIMEOUT=15     seconds to wait for a proxy to answer
#   KEEP_TMP=1           keep the temp dir (configs, logs) for debugging
#   FORWARDED=1          nginx and HAProxy add the forwarding headers ecslb adds
#                        (X-Forwarded-For/-Proto/-Port, a trace id; Host kept), so
#                        every proxy sends the backends the same requests; 0: they
#                        forward the bare request (less work for the backends)
#   BUSY_POLL=0          1: ecslb runs with --busy-poll and HAProxy with its
#                        `busy-polling` (workers poll instead of sleeping; nginx has
#                        no such setting)
#
# All traffic stays on 127.0.0.1; every load loop has a time limit.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TPL_DIR="$ROOT/benches/load"
OUT_DIR="$ROOT/benches/out"

DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-50}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-1}
if [[ ${BUSY_POLL:-0} == 1 ]]; then
    PROXIES=${PROXIES:-"ecslb nginx haproxy"}
else
    PROXIES=${PROXIES:-"ecslb ecslb-poll nginx haproxy"}
fi
POLL_WINDOW=${POLL_WINDOW:-50us}
READY_TIMEOUT=${READY_TIMEOUT:-15}
KEEP_TMP=${KEEP_TMP:-0}
LOG_TAG=load
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

for v in DURATION CONNECTIONS WARMUP READY_TIMEOUT ROUNDS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
FWD=$(forwarded_prefix)
busy_poll_setup
read -r -a PROXY_LIST <<<"$PROXIES"
((${#PROXY_LIST[@]} > 0)) || die "PROXIES is empty"
for p in "${PROXY_LIST[@]}"; do
    case $p in
    ecslb | ecslb-poll | ecslb-nometrics | nginx | haproxy) ;;
    *) die "unknown proxy '$p' in PROXIES (known: ecslb ecslb-poll ecslb-nometrics nginx haproxy)" ;;
    esac
done
want() { [[ " ${PROXY_LIST[*]} " == *" $1 "* ]]; }
if want ecslb-poll && [[ ${BUSY_POLL:-0} == 1 ]]; then
    die "ecslb-poll and BUSY_POLL=1 do not go together: --busy-poll polls all the time"
fi

# --------------------------------------------------------------------------
# 1. Tools and the ecslb binary
# --------------------------------------------------------------------------
needed_cmds=(nginx wrk curl python3 taskset setsid)
want haproxy && needed_cmds+=(haproxy)
install_missing "${needed_cmds[@]}"
if want ecslb || want ecslb-poll || want ecslb-nometrics; then
    build_ecslb
fi
make_workdir load

# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------

# run_wrk SECONDS URL OUTFILE : wrk on core 1, hard time limit around it.
# Started in the background and waited for, so INT/TERM are handled at once.
run_wrk() {
    local rc=0
    start_bg "$3" timeout -k 5 $(($1 + 30)) taskset -c 1 \
        wrk -t1 -c"$CONNECTIONS" -d"$1"s --latency "$2"
    wait "$LAST_PID" || rc=$?
    forget_pid "$LAST_PID"
    return "$rc"
}

# --------------------------------------------------------------------------
# 3. Backends: one nginx, three server blocks, core 1.
# --------------------------------------------------------------------------
read -r P1 P2 P3 PORT_ECSLB PORT_NGINX PORT_HAPROXY PORT_ECSLB_NM PORT_ECSLB_POLL <<<"$(free_ports 8)"
declare -A PROXY_PORT=([ecslb]=$PORT_ECSLB [ecslb-poll]=$PORT_ECSLB_POLL [ecslb-nometrics]=$PORT_ECSLB_NM
    [nginx]=$PORT_NGINX [haproxy]=$PORT_HAPROXY)
start_backends

# --------------------------------------------------------------------------
# 4. Each proxy in turn, core 0.
# --------------------------------------------------------------------------
STAMP=$(date +%Y%m%d-%H%M%S)
RESULTS=()   # "proxy|rps|p99ms|errors|cpu|cores busy|IPIs per 1k|note|round"
TICKS=$(getconf CLK_TCK)
RAW="$WORK/raw.txt"
: >"$RAW"
FAILED=0

start_proxy() {
    local name=$1 port=$2 dir=$3
    case $name in
    ecslb | ecslb-poll | ecslb-nometrics)
        render "$TPL_DIR/ecslb.toml.tmpl" "$dir/ecslb.toml" "$dir" "$port"
        # The same proxy with request counting off, to measure what metrics cost.
        [[ $name == ecslb-nometrics ]] && printf '\n[metrics]\nenabled = false\n' >>"$dir/ecslb.toml"
        local args=("${ECSLB_ARGS[@]}")
        [[ $name == ecslb-poll ]] && args+=(--poll-before-sleep "$POLL_WINDOW")
        RUST_LOG=${RUST_LOG:-warn} start_bg "$dir/stdout.log" \
            taskset -c 0 "$ECSLB_BIN" run -c "$dir/ecslb.toml" --workers 1 "${args[@]}"
        ;;
    nginx)
        render "$TPL_DIR/nginx.conf.tmpl" "$dir/nginx.conf" "$dir" "$port" "FWD=$FWD"
        start_nginx "$dir" 0
        ;;
    haproxy)
        render "$TPL_DIR/haproxy.cfg.tmpl" "$dir/haproxy.cfg" "$dir" "$port" "FWD=$FWD" "BUSY=$BUSY"
        start_bg "$dir/stdout.log" taskset -c 0 haproxy -db -f "$dir/haproxy.cfg"
        ;;
    esac
}

record_failure() {
    local name=$1 why=$2 dir=$3
    log "$name: $why; last log lines:"
    tail -n 20 "$dir"/*.log >&2 2>/dev/null || true
    RESULTS+=("$name|-|-|-|-|-|-|FAILED: $why|$round")
    FAILED=1
}

# measure NAME ROUND : one proxy's run, appended to RESULTS.
measure() {
    local name=$1 round=$2 port dir url pid rc why seen note cpu_pid user0 sys0 user1 sys1
    local wrc alive wrk_out rps p99_raw p99 sock sock_total non2xx errors detail requests cpu
    local cores0 cores1 busy ipis
    port=${PROXY_PORT[$name]}
    dir="$WORK/$name"
    mkdir -p "$dir"
    url="http://127.0.0.1:$port/"
    log "$name: starting on 127.0.0.1:$port (core 0)"
    start_proxy "$name" "$port" "$dir"
    pid=$LAST_PID

    rc=0
    wait_ready "$port" "$pid" || rc=$?
    if ((rc != 0)); then
        if ((rc == 2)); then why="exited during startup"; else why="not ready after ${READY_TIMEOUT}s"; fi
        stop_pid "$pid"
        record_failure "$name" "$why" "$dir"
        return
    fi

    seen=$(backends_seen "$port")
    note=""
    if [[ $seen != 3 ]]; then
        note="rr-check: saw $seen/3 backends"
        log "$name: warning: $note"
    fi

    log "$name: warm-up ${WARMUP}s"
    run_wrk "$WARMUP" "$url" "$dir/warmup.txt" || true
    log "$name: measuring ${DURATION}s with $CONNECTIONS connections"
    # nginx serves from its worker, the master's child.
    cpu_pid=$pid
    [[ $name == nginx ]] && cpu_pid=$(pgrep -P "$pid" | head -n 1)
    read -r user0 sys0 <<<"$(cpu_split "$cpu_pid")"
    cores0=$(core_snapshot)
    wrc=0
    run_wrk "$DURATION" "$url" "$dir/wrk.txt" || wrc=$?
    cores1=$(core_snapshot)
    read -r user1 sys1 <<<"$(cpu_split "$cpu_pid" 2>/dev/null || echo "$user0 $sys0")"
    alive=1
    is_alive "$pid" || alive=0
    stop_pid "$pid"

    { printf '==== %s (%s), round %s ====\n' "$name" "$url" "$round"; cat "$dir/wrk.txt"; echo; } >>"$RAW"
    if ((wrc != 0)); then
        record_failure "$name" "wrk exited with $wrc" "$dir"
        return
    fi

    wrk_out="$dir/wrk.txt"
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$wrk_out")
    p99_raw=$(awk '$1 == "99%" { print $2 }' "$wrk_out")
    p99=$(to_ms "${p99_raw:-?}")
    # "Socket errors: connect 0, read 0, write 0, timeout 0" (only if any)
    sock=$(awk '/Socket errors:/ { gsub(/,/, "")
        print "connect=" $4 " read=" $6 " write=" $8 " timeout=" $10 }' "$wrk_out")
    sock_total=$(awk '/Socket errors:/ { gsub(/,/, ""); print $4 + $6 + $8 + $10 }' "$wrk_out")
    non2xx=$(awk -F': *' '/Non-2xx or 3xx responses/ { print $2 }' "$wrk_out")
    errors=$((${sock_total:-0} + ${non2xx:-0}))
    if ((errors > 0)); then
        detail="${sock:+$sock }non2xx=${non2xx:-0}"
        note="${note:+$note; }$detail"
    fi
    ((alive)) || note="${note:+$note; }proxy died during run"
    [[ -n $rps ]] || {
        record_failure "$name" "could not parse wrk output" "$dir"
        return
    }
    # CPU microseconds per request: user + system.
    requests=$(awk '/ requests in / { print $1 }' "$wrk_out")
    cpu=$(awk -v u=$((user1 - user0)) -v s=$((sys1 - sys0)) -v n="${requests:-0}" -v hz="$TICKS" \
        'BEGIN { if (n > 0) printf "%.2f+%.2f", u * 1e6 / hz / n, s * 1e6 / hz / n; else print "-" }')
    read -r busy ipis <<<"$(core_use "$cores0" "$cores1" "$(awk -v n="${requests:-0}" 'BEGIN { print n / 1000 }')")"
    RESULTS+=("$name|$rps|$p99|$errors|$cpu|$busy|$ipis|$note|$round")
    log "$name: $rps req/s, p99 ${p99} ms, errors $errors"
}

for ((round = 1; round <= ROUNDS; round++)); do
    if ((ROUNDS > 1)); then log "round $round of $ROUNDS"; fi
    n=${#PROXY_LIST[@]}
    for ((i = 0; i < n; i++)); do
        measure "${PROXY_LIST[$(((i + round - 1) % n))]}" "$round"
    done
done

# --------------------------------------------------------------------------
# 5. Report
# --------------------------------------------------------------------------
mkdir -p "$OUT_DIR"
OUT="$OUT_DIR/load-$STAMP.txt"

version_of() {
    case $1 in
    ecslb | ecslb-poll | ecslb-nometrics) timeout 5 "$ECSLB_BIN" --version 2>/dev/null | head -n 1 || true ;;
    nginx) nginx -v 2>&1 | head -n 1 ;;
    haproxy) haproxy -v 2>/dev/null | head -n 1 ;;
    esac
}

{
    echo "ecslb load comparison - $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "git: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)" \
        " $(host_line)"
    echo "wrk -t1 -c$CONNECTIONS -d${DURATION}s --latency (warm-up ${WARMUP}s);" \
        "proxy on core 0 (1 worker), backends + wrk on core 1;" \
        "3 backends, round robin, GET / -> 13-byte body;" \
        "nginx/HAProxy forwarding headers: $([[ -z $FWD ]] && echo "added, as ecslb's" || echo off)"
    busy_poll_note
    if want ecslb-poll; then echo "ecslb-poll: ecslb --poll-before-sleep $POLL_WINDOW"; fi
    for name in "${PROXY_LIST[@]}"; do
        echo "  $name: $(version_of "$name")"
    done
    echo
    printf '%-5s %-10s %12s %10s %8s %16s %11s %11s  %s\n' round proxy "requests/s" "p99 (ms)" \
        errors "CPU us/req u+s" "cores 0/1" "IPIs/1k" notes
    printf '%-5s %-10s %12s %10s %8s %16s %11s %11s  %s\n' ----- ---------- ------------ ---------- \
        -------- ---------------- ----------- ----------- -----
    for row in "${RESULTS[@]}"; do
        IFS='|' read -r n r p e c b i t k <<<"$row"
        printf '%-5s %-10s %12s %10s %8s %16s %11s %11s  %s\n' "$k" "$n" "$r" "$p" "$e" "$c" "$b" "$i" "$t"
    done
    echo
    echo "cores 0/1: how busy the proxy's core and the wrk + backends core were during the run."
    echo "IPIs/1k: interrupts core 0 took from the other core per 1,000 requests, mostly to wake"
    echo "a proxy that was waiting for work; each costs the sending core (core 1) time."
    if ((ROUNDS > 1)); then
        echo
        printf '%s\n' "${RESULTS[@]}" | python3 "$ROOT/benches/rounds.py"
    fi
} >"$WORK/table.txt"

echo
cat "$WORK/table.txt"
{
    cat "$WORK/table.txt"
    echo
    echo "---- raw wrk output ----"
    cat "$RAW"
} >"$OUT"
echo
log "written to ${OUT#"$ROOT"/}"

exit "$FAILED"

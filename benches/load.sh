#!/usr/bin/env bash
# benches/load.sh - compare ecslb with nginx and HAProxy as L7 round-robin
# proxies on loopback.
#
# Three nginx-served backends (core 1) answer GET / with "hello, world\n".
# Each proxy in turn runs with one worker pinned to core 0 and is loaded with
# wrk (one thread, also on core 1). We report requests/s, p99 latency and
# errors in a table, printed and saved to benches/out/load-<date>.txt.
#
# Environment:
#   DURATION=10          seconds of measured load per proxy
#   CONNECTIONS=50       concurrent wrk connections
#   WARMUP=2             seconds of warm-up load per proxy
#   PROXIES="ecslb nginx haproxy"   which proxies to run, in order; "ecslb-nometrics" is
#                        ecslb with `[metrics] enabled = false` (the cost of metrics)
#   ECSLB_BIN=path       use this ecslb binary; skip `cargo build --release`
#   READY_TIMEOUT=15     seconds to wait for a proxy to answer
#   KEEP_TMP=1           keep the temp dir (configs, logs) for debugging
#
# All traffic stays on 127.0.0.1; every load loop has a time limit.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TPL_DIR="$ROOT/benches/load"
OUT_DIR="$ROOT/benches/out"

DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-50}
WARMUP=${WARMUP:-2}
PROXIES=${PROXIES:-"ecslb nginx haproxy"}
READY_TIMEOUT=${READY_TIMEOUT:-15}
KEEP_TMP=${KEEP_TMP:-0}

# nginx and haproxy live in /usr/sbin on Debian, often off a normal user's PATH.
export PATH="$PATH:/usr/sbin:/sbin"

log() { printf '[load] %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

for v in DURATION CONNECTIONS WARMUP READY_TIMEOUT; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
read -r -a PROXY_LIST <<<"$PROXIES"
((${#PROXY_LIST[@]} > 0)) || die "PROXIES is empty"
for p in "${PROXY_LIST[@]}"; do
    case $p in
    ecslb | ecslb-nometrics | nginx | haproxy) ;;
    *) die "unknown proxy '$p' in PROXIES (known: ecslb ecslb-nometrics nginx haproxy)" ;;
    esac
done
want() { [[ " ${PROXY_LIST[*]} " == *" $1 "* ]]; }

# --------------------------------------------------------------------------
# Process bookkeeping and cleanup. Every process we start runs in its own
# session (setsid), so we can stop it together with any children it forks.
# --------------------------------------------------------------------------
PIDS=()
WORK=""

is_alive() {
    local state
    [[ -r /proc/$1/stat ]] || return 1
    state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $state && $state != Z ]]
}

stop_pid() {
    local pid=$1 i
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        is_alive "$pid" || break
        sleep 0.1
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    forget_pid "$pid"
}

forget_pid() {
    local kept=() p
    for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || kept+=("$p"); done
    PIDS=("${kept[@]}")
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local p
    for p in "${PIDS[@]}"; do stop_pid "$p"; done
    if [[ -n $WORK && -d $WORK ]]; then
        if [[ $KEEP_TMP == 1 ]]; then
            log "kept temp dir $WORK"
        else
            rm -rf -- "$WORK"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

# start_bg LOGFILE CMD... : start CMD in its own session; pid in LAST_PID.
LAST_PID=""
start_bg() {
    local logfile=$1
    shift
    setsid "$@" >"$logfile" 2>&1 </dev/null &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

# --------------------------------------------------------------------------
# 1. Tools
# --------------------------------------------------------------------------
declare -A PKG_OF=([nginx]=nginx [haproxy]=haproxy [wrk]=wrk [curl]=curl
    [python3]=python3 [taskset]=util-linux [setsid]=util-linux)
needed_cmds=(nginx wrk curl python3 taskset setsid)
want haproxy && needed_cmds+=(haproxy)
missing=()
for c in "${needed_cmds[@]}"; do
    command -v "$c" >/dev/null 2>&1 || missing+=("${PKG_OF[$c]}")
done
if ((${#missing[@]} > 0)); then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "installing: ${missing[*]}"
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
    else
        log "missing tools; please install them first, e.g.:"
        log "  sudo apt-get install -y ${missing[*]}"
        exit 1
    fi
fi

# --------------------------------------------------------------------------
# 2. ecslb binary
# --------------------------------------------------------------------------
if want ecslb || want ecslb-nometrics; then
    if [[ -z ${ECSLB_BIN:-} ]]; then
        log "building ecslb: cargo build --release (in $ROOT)"
        (cd "$ROOT" && cargo build --release) ||
            die "cargo build --release failed; set ECSLB_BIN=... or PROXIES=\"nginx haproxy\""
        ECSLB_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/ecslb
        [[ $ECSLB_BIN == /* ]] || ECSLB_BIN=$ROOT/$ECSLB_BIN
        log "build done: $ECSLB_BIN"
    fi
    [[ -x $ECSLB_BIN ]] || die "ECSLB_BIN '$ECSLB_BIN' is not executable"
fi

# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------
ulimit -n 65535 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ecslb-load.XXXXXX")
# When run as root, nginx workers drop to 'nobody'; let them traverse.
chmod 755 "$WORK"

# Print N distinct free TCP ports on 127.0.0.1 (all bound at once, so distinct).
free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# render TEMPLATE OUTFILE DIR PORT : fill @DIR@ @PORT@ @P1@ @P2@ @P3@.
render() {
    sed -e "s|@DIR@|$3|g" -e "s|@PORT@|$4|g" \
        -e "s|@P1@|$P1|g" -e "s|@P2@|$P2|g" -e "s|@P3@|$P3|g" "$1" >"$2"
    if grep -qE '@[A-Z0-9_]+@' "$2"; then
        die "unfilled placeholder in $2"
    fi
}

NGINX_HAS_E=0
nginx -h 2>&1 | grep -qE '^ *-e ' && NGINX_HAS_E=1

# start_nginx DIR CPU : nginx with DIR/nginx.conf as prefix, pinned to CPU.
start_nginx() {
    local dir=$1 cpu=$2 d
    for d in client_body proxy fastcgi uwsgi scgi; do mkdir -p "$dir/$d"; done
    chmod -R 755 "$dir"
    local args=(-p "$dir/" -c "$dir/nginx.conf")
    ((NGINX_HAS_E)) && args+=(-e "$dir/error.log")
    start_bg "$dir/stdout.log" taskset -c "$cpu" nginx "${args[@]}"
}

# wait_ready PORT PID : until http://127.0.0.1:PORT/ answers 2xx.
wait_ready() {
    local port=$1 pid=$2 deadline=$((SECONDS + READY_TIMEOUT))
    while ((SECONDS < deadline)); do
        is_alive "$pid" || return 2
        if curl -fsS -m 1 -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null; then
            return 0
        fi
        sleep 0.2
    done
    return 1
}

# backends_seen PORT : number of distinct X-Backend values over 6 requests.
backends_seen() {
    local i
    for ((i = 0; i < 6; i++)); do
        curl -sS -m 2 -D - -o /dev/null "http://127.0.0.1:$1/" 2>/dev/null |
            tr -d '\r' | awk -F': *' 'tolower($1) == "x-backend" { print $2 }'
    done | sort -u | grep -c . || true
}

# to_ms VALUE : wrk latency ("812.00us", "1.23ms", "2.01s", "1.2m") -> ms.
to_ms() {
    awk -v v="$1" 'BEGIN {
        if (!match(v, /^[0-9.]+/)) { print "n/a"; exit }
        n = substr(v, 1, RLENGTH); u = substr(v, RLENGTH + 1)
        f = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : \
            (u == "m") ? 60000 : (u == "h") ? 3600000 : -1
        if (f < 0) { print "n/a"; exit }
        printf "%.3f", n * f
    }'
}

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
read -r P1 P2 P3 PORT_ECSLB PORT_NGINX PORT_HAPROXY PORT_ECSLB_NM <<<"$(free_ports 7)"
declare -A PROXY_PORT=([ecslb]=$PORT_ECSLB [ecslb-nometrics]=$PORT_ECSLB_NM [nginx]=$PORT_NGINX [haproxy]=$PORT_HAPROXY)

BDIR="$WORK/backends"
mkdir -p "$BDIR"
render "$TPL_DIR/backends.nginx.conf.tmpl" "$BDIR/nginx.conf" "$BDIR" 0
log "starting backends on 127.0.0.1:$P1 :$P2 :$P3 (nginx, core 1)"
start_nginx "$BDIR" 1
BACKEND_PID=$LAST_PID
for port in "$P1" "$P2" "$P3"; do
    if ! wait_ready "$port" "$BACKEND_PID"; then
        tail -n 20 "$BDIR/error.log" "$BDIR/stdout.log" >&2 2>/dev/null || true
        die "backend on port $port did not come up"
    fi
    body=$(curl -fsS -m 2 "http://127.0.0.1:$port/")
    [[ $body == "hello, world" ]] || die "backend $port answered '$body'"
done

# --------------------------------------------------------------------------
# 4. Each proxy in turn, core 0.
# --------------------------------------------------------------------------
STAMP=$(date +%Y%m%d-%H%M%S)
RESULTS=()   # "proxy|rps|p99ms|errors|note"
RAW="$WORK/raw.txt"
: >"$RAW"
FAILED=0

start_proxy() {
    local name=$1 port=$2 dir=$3
    case $name in
    ecslb | ecslb-nometrics)
        render "$TPL_DIR/ecslb.toml.tmpl" "$dir/ecslb.toml" "$dir" "$port"
        # The same proxy with request counting off, to measure what metrics cost.
        [[ $name == ecslb-nometrics ]] && printf '\n[metrics]\nenabled = false\n' >>"$dir/ecslb.toml"
        RUST_LOG=${RUST_LOG:-warn} start_bg "$dir/stdout.log" \
            taskset -c 0 "$ECSLB_BIN" run -c "$dir/ecslb.toml" --workers 1
        ;;
    nginx)
        render "$TPL_DIR/nginx.conf.tmpl" "$dir/nginx.conf" "$dir" "$port"
        start_nginx "$dir" 0
        ;;
    haproxy)
        render "$TPL_DIR/haproxy.cfg.tmpl" "$dir/haproxy.cfg" "$dir" "$port"
        start_bg "$dir/stdout.log" taskset -c 0 haproxy -db -f "$dir/haproxy.cfg"
        ;;
    esac
}

record_failure() {
    local name=$1 why=$2 dir=$3
    log "$name: $why; last log lines:"
    tail -n 20 "$dir"/*.log >&2 2>/dev/null || true
    RESULTS+=("$name|-|-|-|FAILED: $why")
    FAILED=1
}

for name in "${PROXY_LIST[@]}"; do
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
        continue
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
    wrc=0
    run_wrk "$DURATION" "$url" "$dir/wrk.txt" || wrc=$?
    alive=1
    is_alive "$pid" || alive=0
    stop_pid "$pid"

    { printf '==== %s (%s) ====\n' "$name" "$url"; cat "$dir/wrk.txt"; echo; } >>"$RAW"
    if ((wrc != 0)); then
        record_failure "$name" "wrk exited with $wrc" "$dir"
        continue
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
        continue
    }
    RESULTS+=("$name|$rps|$p99|$errors|$note")
    log "$name: $rps req/s, p99 ${p99} ms, errors $errors"
done

# --------------------------------------------------------------------------
# 5. Report
# --------------------------------------------------------------------------
mkdir -p "$OUT_DIR"
OUT="$OUT_DIR/load-$STAMP.txt"

version_of() {
    case $1 in
    ecslb | ecslb-nometrics) timeout 5 "$ECSLB_BIN" --version 2>/dev/null | head -n 1 || true ;;
    nginx) nginx -v 2>&1 | head -n 1 ;;
    haproxy) haproxy -v 2>/dev/null | head -n 1 ;;
    esac
}

{
    echo "ecslb load comparison - $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "git: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)" \
        " host: $(uname -srm), $(nproc) cpus"
    echo "wrk -t1 -c$CONNECTIONS -d${DURATION}s --latency (warm-up ${WARMUP}s);" \
        "proxy on core 0 (1 worker), backends + wrk on core 1;" \
        "3 backends, round robin, GET / -> 13-byte body"
    for name in "${PROXY_LIST[@]}"; do
        echo "  $name: $(version_of "$name")"
    done
    echo
    printf '%-8s %12s %10s %8s  %s\n' proxy "requests/s" "p99 (ms)" errors notes
    printf '%-8s %12s %10s %8s  %s\n' -------- ------------ ---------- -------- -----
    for row in "${RESULTS[@]}"; do
        IFS='|' read -r n r p e t <<<"$row"
        printf '%-8s %12s %10s %8s  %s\n' "$n" "$r" "$p" "$e" "$t"
    done
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

#!/usr/bin/env bash
# benches/lib.sh - shared by the load scripts (sourced, not run): process
# bookkeeping that stops everything on exit, tool installation, the ecslb
# release build, free ports, templates and the nginx backends.
#
# The sourcing script sets ROOT, LOG_TAG, READY_TIMEOUT and KEEP_TMP first.

log() { printf '[%s] %s\n' "${LOG_TAG:-bench}" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# nginx and haproxy live in /usr/sbin on Debian, often off a normal user's PATH.
export PATH="$PATH:/usr/sbin:/sbin"

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

# install_missing CMD... : apt-get install the packages of the missing commands
# (as root), or say which to install.
declare -A PKG_OF=([nginx]=nginx [haproxy]=haproxy [wrk]=wrk [curl]=curl
    [python3]=python3 [taskset]=util-linux [setsid]=util-linux [iperf3]=iperf3
    [openssl]=openssl [h2load]=nghttp2-client [getconf]=libc-bin)
install_missing() {
    local missing=() c
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 || missing+=("${PKG_OF[$c]}")
    done
    ((${#missing[@]} > 0)) || return 0
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
}

# build_ecslb : sets ECSLB_BIN, building the release binary unless it is given.
build_ecslb() {
    if [[ -z ${ECSLB_BIN:-} ]]; then
        log "building ecslb: cargo build --release (in $ROOT)"
        (cd "$ROOT" && cargo build --release) ||
            die "cargo build --release failed; set ECSLB_BIN=..."
        ECSLB_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/ecslb
        [[ $ECSLB_BIN == /* ]] || ECSLB_BIN=$ROOT/$ECSLB_BIN
        log "build done: $ECSLB_BIN"
    fi
    [[ -x $ECSLB_BIN ]] || die "ECSLB_BIN '$ECSLB_BIN' is not executable"
}

# cpu_ticks PID : user+system clock ticks the process has used.
cpu_ticks() {
    local stat rest f
    stat=$(<"/proc/$1/stat")
    rest=${stat##*) }    # comm may contain spaces; fields resume after ") "
    read -r -a f <<<"$rest"
    echo $((f[11] + f[12]))
}

# cpu_split PID : user and system clock ticks the process has used ("user sys").
cpu_split() {
    local stat rest f
    stat=$(<"/proc/$1/stat")
    rest=${stat##*) }
    read -r -a f <<<"$rest"
    echo "${f[11]} ${f[12]}"
}

# core_snapshot : busy and total clock ticks of cores 0 and 1 (/proc/stat), and the
# inter-processor interrupts core 0 has taken (function-call and reschedule IPIs
# from /proc/interrupts: mostly another core waking a task that sleeps on core 0).
# Prints "busy0 total0 busy1 total1 ipi0".
core_snapshot() {
    local busy=() total=() name f i ipi
    for i in 0 1; do
        read -r name f <<<"$(grep "^cpu$i " /proc/stat)"
        read -r -a f <<<"$f"
        # user nice system idle iowait irq softirq steal
        total[i]=$((f[0] + f[1] + f[2] + f[3] + f[4] + f[5] + f[6] + f[7]))
        busy[i]=$((total[i] - f[3] - f[4]))
    done
    ipi=$(awk '$1 == "CAL:" || $1 == "RES:" { n += $2 } END { print n + 0 }' /proc/interrupts)
    echo "${busy[0]} ${total[0]} ${busy[1]} ${total[1]} $ipi"
}

# core_use BEFORE AFTER COUNT : from two core_snapshot lines, "core0%/core1%" busy and
# core 0's IPIs per COUNT units of work (requests, connections), as "c0/c1 ipi".
core_use() {
    local a b
    read -r -a a <<<"$1"
    read -r -a b <<<"$2"
    awk -v b0=$((b[0] - a[0])) -v t0=$((b[1] - a[1])) -v b1=$((b[2] - a[2])) \
        -v t1=$((b[3] - a[3])) -v ipi=$((b[4] - a[4])) -v n="$3" 'BEGIN {
        c0 = t0 ? 100 * b0 / t0 : 0; c1 = t1 ? 100 * b1 / t1 : 0; per = n > 0 ? ipi / n : 0
        printf "%.0f%%/%.0f%% %.2f\n", c0, c1, per }'
}

# host_line : "host: KERNEL, N cpus", plus the guest's halt polling when the haltpoll
# cpuidle driver is loaded. With it at 0 (as this VM boots), an idle core halts at once
# and every wake of a proxy waiting on it costs the waking core an IPI; with polling on,
# the idle core spins a while first and wakes come cheap (see benches/README.md).
host_line() {
    local poll=/sys/module/haltpoll/parameters/guest_halt_poll_ns extra=""
    [[ -r $poll ]] && extra=", guest halt polling $(cat "$poll") ns"
    echo "host: $(uname -srm), $(nproc) cpus$extra"
}

# make_workdir NAME : a temp dir in WORK (removed on exit unless KEEP_TMP=1).
make_workdir() {
    ulimit -n 65535 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/ecslb-$1.XXXXXX")
    # When run as root, nginx workers drop to 'nobody'; let them traverse.
    chmod 755 "$WORK"
}

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

# render TEMPLATE OUTFILE DIR PORT [NAME=VALUE...] : fill @DIR@ @PORT@ @P1@ @P2@
# @P3@ and each @NAME@.
# forwarded_prefix : reads FORWARDED (default 1) and prints the prefix for the
# @FWD@ lines of the nginx/HAProxy templates: "" to keep them (the forwarding
# headers ecslb adds, so every proxy sends the backends the same requests), "# " to
# comment them out.
forwarded_prefix() {
    case ${FORWARDED:-1} in
    1) printf '' ;;
    0) printf '# ' ;;
    *) die "FORWARDED must be 0 or 1 (got '$FORWARDED')" ;;
    esac
}

# busy_poll_setup : reads BUSY_POLL (default 0). With 1, ecslb runs with
# `--busy-poll` and HAProxy with `busy-polling` (its equivalent: never sleep in the
# poller); nginx has no such setting. Sets ECSLB_ARGS (extra `ecslb run` arguments)
# and BUSY (the prefix of the @BUSY@ lines of the HAProxy templates: "" keeps them,
# "# " comments them out).
busy_poll_setup() {
    case ${BUSY_POLL:-0} in
    0) ECSLB_ARGS=() BUSY='# ' ;;
    1) ECSLB_ARGS=(--busy-poll) BUSY='' ;;
    *) die "BUSY_POLL must be 0 or 1 (got '$BUSY_POLL')" ;;
    esac
}

# busy_poll_note : a line for reports, when BUSY_POLL=1.
busy_poll_note() {
    [[ ${BUSY_POLL:-0} == 1 ]] && echo "busy polling: ecslb --busy-poll, HAProxy busy-polling (nginx has none)"
    return 0
}

render() {
    local args=(-e "s|@DIR@|$3|g" -e "s|@PORT@|$4|g"
        -e "s|@P1@|${P1:-}|g" -e "s|@P2@|${P2:-}|g" -e "s|@P3@|${P3:-}|g") pair
    for pair in "${@:5}"; do
        args+=(-e "s|@${pair%%=*}@|${pair#*=}|g")
    done
    sed "${args[@]}" "$1" >"$2"
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

# wait_ready PORT PID [CURL_FLAG...] : until http://127.0.0.1:PORT/ answers 2xx.
wait_ready() {
    local port=$1 pid=$2 deadline=$((SECONDS + READY_TIMEOUT))
    shift 2
    while ((SECONDS < deadline)); do
        is_alive "$pid" || return 2
        if curl "$@" -fsS -m 1 -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null; then
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

# start_backends [h2c] : the three nginx backends of benches/load/ on P1 P2 P3, core 1;
# with h2c, they speak HTTP/2 only (prior knowledge), not HTTP/1.1.
start_backends() {
    local bdir="$WORK/backends" port body curl_flags=()
    mkdir -p "$bdir"
    render "$ROOT/benches/load/backends.nginx.conf.tmpl" "$bdir/nginx.conf" "$bdir" 0
    if [[ ${1:-} == h2c ]]; then
        sed -i 's/ backlog=4096;/ http2 backlog=4096;/' "$bdir/nginx.conf"
        curl_flags=(--http2-prior-knowledge)
    fi
    log "starting backends on 127.0.0.1:$P1 :$P2 :$P3 (nginx${1:+, $1}, core 1)"
    start_nginx "$bdir" 1
    BACKEND_PID=$LAST_PID
    for port in "$P1" "$P2" "$P3"; do
        if ! wait_ready "$port" "$BACKEND_PID" "${curl_flags[@]}"; then
            tail -n 20 "$bdir/error.log" "$bdir/stdout.log" >&2 2>/dev/null || true
            die "backend on port $port did not come up"
        fi
        body=$(curl "${curl_flags[@]}" -fsS -m 2 "http://127.0.0.1:$port/")
        [[ $body == "hello, world" ]] || die "backend $port answered '$body'"
    done
}

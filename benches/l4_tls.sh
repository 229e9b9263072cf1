#!/usr/bin/env bash
# benches/l4_tls.sh - L4 bulk throughput and TLS termination, side by side.
#
# L4: iperf3 (client and server on core 1) straight to its server ("direct"),
#     through ecslb's tcp listener (splice) and through HAProxy `mode tcp` with
#     splice-auto, each proxy with one thread pinned to core 0. Reports Gbit/s and
#     the proxy's CPU use.
# TLS: ecslb's https listener and nginx (`listen ssl`), one worker each on core 0,
#     same ECDSA P-256 certificate, in front of the three nginx backends of
#     benches/load/ (core 1). wrk (core 1) measures HTTPS keep-alive requests/s,
#     and handshakes/s (`Connection: close`: each request is a new TLS connection).
#
# Environment:
#   DURATION=10      seconds per measurement
#   CONNECTIONS=50   wrk connections
#   PARTS="l4 tls"   which parts to run
#   ROUNDS=1         TLS part: measure ecslb and nginx this many times, alternating
#                    which goes first, and add each one's medians
#   ECSLB_BIN=path   use this binary; skip `cargo build --release`
#   KEEP_TMP=1       keep the temp dir
#   FORWARDED=1      nginx adds the forwarding headers ecslb adds (as in load.sh)
#   BUSY_POLL=0      1: ecslb runs with --busy-poll, HAProxy with `busy-polling`
#                    (as in load.sh; nginx has no such setting)
#
# All traffic stays on 127.0.0.1; every run has a time limit.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TPL_DIR="$ROOT/benches/l4tls"
OUT_DIR="$ROOT/benches/out"
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-50}
PARTS=${PARTS:-"l4 tls"}
ROUNDS=${ROUNDS:-1}
READY_TIMEOUT=${READY_TIMEOUT:-15}
KEEP_TMP=${KEEP_TMP:-0}
LOG_TAG=l4_tls
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

for v in DURATION CONNECTIONS ROUNDS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
FWD=$(forwarded_prefix)
busy_poll_setup
part() { [[ " $PARTS " == *" $1 "* ]]; }

install_missing nginx haproxy wrk curl python3 taskset setsid iperf3 openssl
build_ecslb
make_workdir l4tls
read -r P1 P2 P3 IPERF_PORT E_TCP H_TCP E_TLS N_TLS <<<"$(free_ports 8)"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=bench.test -addext subjectAltName=DNS:bench.test,IP:127.0.0.1 \
    -keyout "$WORK/bench.key" -out "$WORK/bench.pem" 2>/dev/null
chmod 644 "$WORK/bench.key"

PORTS=(TCP_PORT="$E_TCP" TLS_PORT="$E_TLS" IPERF_PORT="$IPERF_PORT")
mkdir -p "$WORK/ecslb"
render "$TPL_DIR/ecslb.toml.tmpl" "$WORK/ecslb/ecslb.toml" "$WORK" 0 "${PORTS[@]}"

TICKS=$(getconf CLK_TCK)

start_ecslb() {
    RUST_LOG=${RUST_LOG:-warn} start_bg "$WORK/ecslb/stdout.log" \
        taskset -c 0 "$ECSLB_BIN" run -c "$WORK/ecslb/ecslb.toml" --workers 1 "${ECSLB_ARGS[@]}"
    ECSLB_PID=$LAST_PID
    local deadline=$((SECONDS + READY_TIMEOUT))
    until grep -q "ecslb started" "$WORK/ecslb/stdout.log" 2>/dev/null; do
        is_alive "$ECSLB_PID" || { tail "$WORK/ecslb/stdout.log" >&2; die "ecslb exited"; }
        ((SECONDS < deadline)) || die "ecslb not ready"
        sleep 0.2
    done
}

REPORT=()

# --------------------------------------------------------------------------
# L4 bulk throughput
# --------------------------------------------------------------------------
# iperf PORT PID|- : Gbit/s received, the CPU% of PID over the run, how busy cores 0
# and 1 were and core 0's IPIs per GB received (core_use).
iperf() {
    local port=$1 pid=$2 before=0 after=0 out="$WORK/iperf-$1.json" rc=0 cores0 cores1
    [[ $pid != - ]] && before=$(cpu_ticks "$pid")
    cores0=$(core_snapshot)
    start_bg "$out.log" timeout -k 5 $((DURATION + 30)) taskset -c 1 \
        iperf3 -c 127.0.0.1 -p "$port" -t "$DURATION" -J --logfile "$out"
    wait "$LAST_PID" || rc=$?
    forget_pid "$LAST_PID"
    ((rc == 0)) || { cat "$out" >&2; die "iperf3 through port $port failed"; }
    cores1=$(core_snapshot)
    [[ $pid != - ]] && after=$(cpu_ticks "$pid")
    local gb
    gb=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["end"]["sum_received"]["bytes"] / 1e9)' "$out")
    python3 - "$out" "$((after - before))" "$TICKS" "$DURATION" "$(core_use "$cores0" "$cores1" "$gb")" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
gbits = r["end"]["sum_received"]["bits_per_second"] / 1e9
ticks, hz, secs = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
cpu = "-" if ticks == 0 else f"{100 * ticks / hz / secs:.0f}%"
print(f"{gbits:.2f} {cpu} {sys.argv[5]}")
PY
}

if part l4; then
    install_missing iperf3
    start_bg "$WORK/iperf-server.log" taskset -c 1 iperf3 -s -B 127.0.0.1 -p "$IPERF_PORT"
    sleep 0.5
    mkdir -p "$WORK/haproxy"
    render "$TPL_DIR/haproxy.cfg.tmpl" "$WORK/haproxy/haproxy.cfg" "$WORK/haproxy" 0 \
        TCP_PORT="$H_TCP" IPERF_PORT="$IPERF_PORT" BUSY="$BUSY"
    log "L4: iperf3 ${DURATION}s each: direct, ecslb, haproxy"
    # One proxy runs at a time: a busy-polling one would take core 0 from the other.
    read -r direct _ direct_cores _ <<<"$(iperf "$IPERF_PORT" -)"
    start_ecslb
    read -r ecslb ecslb_cpu ecslb_cores ecslb_ipi <<<"$(iperf "$E_TCP" "$ECSLB_PID")"
    stop_pid "$ECSLB_PID"
    start_bg "$WORK/haproxy/stdout.log" taskset -c 0 haproxy -db -f "$WORK/haproxy/haproxy.cfg"
    HAPROXY_PID=$LAST_PID
    sleep 0.5
    read -r haproxy haproxy_cpu haproxy_cores haproxy_ipi <<<"$(iperf "$H_TCP" "$HAPROXY_PID")"
    stop_pid "$HAPROXY_PID"
    pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f%%", 100 * a / b }'; }
    REPORT+=("L4 bulk throughput (iperf3, 1 stream, ${DURATION}s)"
        "  direct     $direct Gbit/s  (cores 0/1 busy $direct_cores)"
        "  ecslb      $ecslb Gbit/s  ($(pct "$ecslb" "$direct") of direct, proxy CPU $ecslb_cpu, cores 0/1 busy $ecslb_cores, $ecslb_ipi IPIs to core 0 per GB)"
        "  haproxy    $haproxy Gbit/s  ($(pct "$haproxy" "$direct") of direct, proxy CPU $haproxy_cpu, cores 0/1 busy $haproxy_cores, $haproxy_ipi IPIs to core 0 per GB)"
        "")
fi

# --------------------------------------------------------------------------
# TLS termination
# --------------------------------------------------------------------------
# wrk_rps PID URL [wrk args] : requests/s, p99 (ms) and the CPU use of PID during
# a wrk run on core 1, how busy cores 0 and 1 were and core 0's IPIs per request
# (core_use), then any errors.
wrk_rps() {
    local pid=$1 url=$2 out="$WORK/wrk-$RANDOM.txt" rc=0 before after cores0 cores1
    shift 2
    before=$(cpu_ticks "$pid")
    cores0=$(core_snapshot)
    start_bg "$out" timeout -k 5 $((DURATION + 30)) taskset -c 1 \
        wrk -t1 -c"$CONNECTIONS" -d"$DURATION"s --latency "$@" "$url"
    wait "$LAST_PID" || rc=$?
    forget_pid "$LAST_PID"
    ((rc == 0)) || { cat "$out" >&2; die "wrk $url failed"; }
    cores1=$(core_snapshot)
    after=$(cpu_ticks "$pid")
    local rps p99 errors cpu requests
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
    cpu=$(awk -v t=$((after - before)) -v hz="$TICKS" -v s="$DURATION" 'BEGIN { printf "%.0f%%", 100 * t / hz / s }')
    errors=$(awk '/Non-2xx|Socket errors/ { print }' "$out" | tr '\n' ' ')
    requests=$(awk '/ requests in / { print $1 }' "$out")
    echo "$rps $p99 $cpu $(core_use "$cores0" "$cores1" "${requests:-0}") ${errors:-none}"
}

if part tls; then
    start_backends
    mkdir -p "$WORK/nginx"
    cp "$WORK/bench.pem" "$WORK/bench.key" "$WORK/nginx/"
    render "$TPL_DIR/nginx.conf.tmpl" "$WORK/nginx/nginx.conf" "$WORK/nginx" 0 TLS_PORT="$N_TLS" "FWD=$FWD"
    REPORT+=("TLS termination (wrk -t1 -c$CONNECTIONS, ${DURATION}s, ECDSA P-256; CPU: the proxy's, of its one core)"
        "  round proxy  keep-alive req/s  p99 ms   CPU    handshakes/s  p99 ms   CPU   handshakes per CPU-second  cores 0/1  IPIs per handshake")
    ROWS=() # "proxy keep-alive p99 handshakes p99 per-CPU-second"
    for ((round = 1; round <= ROUNDS; round++)); do
        order=(ecslb nginx)
        ((round % 2 == 0)) && order=(nginx ecslb)
        for name in "${order[@]}"; do
            # One proxy runs at a time: a busy-polling one would take core 0 from the other.
            if [[ $name == ecslb ]]; then
                start_ecslb
                port=$E_TLS pid=$ECSLB_PID started=$ECSLB_PID
            else
                start_nginx "$WORK/nginx" 0
                started=$LAST_PID port=$N_TLS
                sleep 0.5
                # nginx's worker is a child of the master we started.
                pid=$(pgrep -P "$started" | head -1)
            fi
            curl -fsS -m 2 -k "https://127.0.0.1:$port/" >/dev/null || die "no HTTPS answer from $name on $port"
            log "TLS: $name keep-alive ${DURATION}s, then new connections ${DURATION}s (round $round of $ROUNDS)"
            read -r ka ka99 kacpu _ _ ka_err <<<"$(wrk_rps "$pid" "https://127.0.0.1:$port/")"
            read -r hs hs99 hscpu hsbusy hsipi hs_err <<<"$(wrk_rps "$pid" "https://127.0.0.1:$port/" -H "Connection: close")"
            per_cpu=$(awk -v r="$hs" -v c="${hscpu%\%}" 'BEGIN { printf "%.0f", (c > 0) ? r * 100 / c : 0 }')
            REPORT+=("$(printf '  %5s %-6s %16s %7s %6s %14s %7s %6s %12s %18s %12s' "$round" "$name" "$ka" "$ka99" "$kacpu" "$hs" "$hs99" "$hscpu" "$per_cpu" "$hsbusy" "$hsipi")")
            [[ $ka_err == none && $hs_err == none ]] || REPORT+=("    errors: $ka_err $hs_err")
            ROWS+=("$name $ka $ka99 $hs $hs99 $per_cpu")
            stop_pid "$started"
        done
    done
    if ((ROUNDS > 1)); then
        REPORT+=("" "  median over $ROUNDS rounds: keep-alive req/s, p99 ms; handshakes/s, p99 ms; handshakes per CPU-second")
        while IFS= read -r line; do REPORT+=("$line"); done < <(printf '%s\n' "${ROWS[@]}" | python3 -c '
import statistics, sys
rows = {}
for line in sys.stdin:
    name, *values = line.split()
    rows.setdefault(name, []).append([float(v) for v in values])
for name, runs in rows.items():
    m = [statistics.median(r[i] for r in runs) for i in range(5)]
    print(f"  {name:<8} {m[0]:>12.2f} {m[1]:>6.3f}   {m[2]:>10.2f} {m[3]:>6.3f}   {m[4]:>8.0f}")
')
    fi
    REPORT+=("" "  cores 0/1: how busy the proxy's core and the wrk + backends core were during the"
        "  handshake run; IPIs: interrupts core 0 took from the other core, mostly to wake a"
        "  proxy waiting for work (each costs the sending core time)." "")
fi

mkdir -p "$OUT_DIR"
OUT="$OUT_DIR/l4_tls-$(date +%Y%m%d-%H%M%S).txt"
{
    echo "ecslb $("$ECSLB_BIN" --version 2>/dev/null || true); $(haproxy -v 2>/dev/null | head -1); $(nginx -v 2>&1); $(iperf3 --version | head -1)"
    host_line
    busy_poll_note
    echo
    printf '%s\n' "${REPORT[@]}"
} | tee "$OUT"
log "written to $OUT"

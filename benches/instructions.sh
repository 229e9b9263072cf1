#!/usr/bin/env bash
# benches/instructions.sh - user-space instructions per proxied request, counted by
# valgrind's callgrind: deterministic, unlike timings on a shared machine, so two
# builds can be compared with a single run each.
#
# ecslb (--workers 1) runs under callgrind in front of the three nginx backends of
# benches/load/; h2load sends WARMUP requests, the counters are zeroed, then REQUESTS
# more (HTTP/1.1 keep-alive, or HTTP/2 with PROTOCOL=h2c; 50 connections, GET /) and
# the counters are dumped. It
# prints instructions per request and, with TOP=N, the N functions with the most
# instructions of their own (inlined code counts to the function it was inlined into).
#
# Environment:
#   REQUESTS=20000   measured requests
#   WARMUP=2000      requests before the counters are zeroed
#   TOP=0            also list this many functions
#   PROTOCOL=h1      h1: HTTP/1.1 keep-alive; h2c: HTTP/2 (prior knowledge), 10 streams
#                    at once per connection
#   TARGETS=h1       what ecslb speaks to the backends: h1 (HTTP/1.1 keep-alive) or h2c
#                    (HTTP/2, prior knowledge: protocol_version = "http2")
#   ECSLB_BIN=path   use this binary; skip `cargo build --release`
#   KEEP_TMP=1       keep the temp dir (config, callgrind output)
#
# All traffic stays on 127.0.0.1; h2load sends a fixed number of requests.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REQUESTS=${REQUESTS:-20000}
WARMUP=${WARMUP:-2000}
TOP=${TOP:-0}
READY_TIMEOUT=${READY_TIMEOUT:-60}
KEEP_TMP=${KEEP_TMP:-0}
LOG_TAG=instructions
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

for v in REQUESTS WARMUP; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
[[ $TOP =~ ^[0-9]+$ ]] || die "TOP must be a number (got '$TOP')"
case ${PROTOCOL:=h1} in
    h1) client_flags=(--h1) ;;
    h2c) client_flags=(-m 10) ;;
    *) die "PROTOCOL must be h1 or h2c (got '$PROTOCOL')" ;;
esac
case ${TARGETS:=h1} in
    h1 | h2c) ;;
    *) die "TARGETS must be h1 or h2c (got '$TARGETS')" ;;
esac
PKG_OF[valgrind]=valgrind
PKG_OF[callgrind_control]=valgrind
install_missing nginx curl python3 taskset setsid h2load valgrind callgrind_control
build_ecslb
make_workdir instructions

read -r P1 P2 P3 PORT <<<"$(free_ports 4)"
if [[ $TARGETS == h2c ]]; then start_backends h2c; else start_backends; fi

render "$ROOT/benches/load/ecslb.toml.tmpl" "$WORK/ecslb.toml" "$WORK" "$PORT"
if [[ $TARGETS == h2c ]]; then
    sed -i '/^\[target_groups.backends\]/a protocol_version = "http2"' "$WORK/ecslb.toml"
fi
log "ecslb under callgrind on 127.0.0.1:$PORT (slow to start)"
RUST_LOG=${RUST_LOG:-warn} start_bg "$WORK/ecslb.log" \
    valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out.%p" \
    "$ECSLB_BIN" run -c "$WORK/ecslb.toml" --workers 1
pid=$LAST_PID
wait_ready "$PORT" "$pid" || die "ecslb did not answer under valgrind; see $WORK/ecslb.log"

url="http://127.0.0.1:$PORT/"
log "warm-up: $WARMUP requests"
h2load "${client_flags[@]}" -n "$WARMUP" -c 50 "$url" >"$WORK/warmup.txt" 2>&1 || die "h2load failed (warm-up)"
callgrind_control -z "$pid" >/dev/null 2>&1
log "measuring: $REQUESTS requests"
h2load "${client_flags[@]}" -n "$REQUESTS" -c 50 "$url" >"$WORK/h2load.txt" 2>&1 || die "h2load failed"
callgrind_control -d "$pid" >/dev/null 2>&1
sleep 1
stop_pid "$pid"

ok=$(awk '/requests:/ && /succeeded/ { for (i = 1; i <= NF; i++) if ($(i + 1) ~ /^succeeded/) print $i }' "$WORK/h2load.txt")
[[ ${ok:-0} == "$REQUESTS" ]] || die "only ${ok:-0} of $REQUESTS requests succeeded; see $WORK/h2load.txt"
# The dump after zeroing is part 1 of the process's output.
out=$(ls "$WORK"/callgrind.out.*.1 2>/dev/null | head -n 1)
[[ -n $out ]] || die "no callgrind dump in $WORK"

python3 - "$out" "$REQUESTS" "$TOP" <<'PY'
import collections, re, sys

path, requests, top = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
names, own = {}, collections.Counter()
current, after_call, total = None, False, 0
for line in open(path):
    m = re.match(r"(c?fn)=\((\d+)\)(?: (.*))?", line)
    if m:
        if m.group(3):
            names[m.group(2)] = m.group(3).strip()
        if m.group(1) == "fn":
            current = names.get(m.group(2), m.group(2))
        continue
    if line.startswith("calls="):
        after_call = True  # the next cost line is the callee's, not this function's
        continue
    if line[:1].isdigit() or line[:1] in "+-*":
        fields = line.split()
        if len(fields) < 2:
            continue
        if after_call:
            after_call = False
            continue
        own[current] += int(fields[1])
        total += int(fields[1])
print(f"instructions per request (user space): {total / requests:,.0f}")
for name, cost in own.most_common(top):
    print(f"  {cost / requests:8,.0f}  {100 * cost / total:5.1f} %  {name[:110]}")
PY

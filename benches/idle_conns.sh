#!/usr/bin/env bash
# benches/idle_conns.sh - memory each idle keep-alive client connection costs ecslb,
# nginx and HAProxy.
#
# Each proxy in turn (one worker, core 0) stands in front of the three nginx
# backends of benches/load/ (core 1). A Python asyncio client opens CONNS
# connections to it, sends one GET on each, reads the answer and keeps every
# connection open. The proxy's resident memory (VmRSS) is read before and a second
# after; the report gives the growth per connection. Mobile and browser clients
# leave many such connections open, so this is what holding them costs.
#
# Environment:
#   CONNS=5000       idle connections per proxy (the script raises its open files
#                    limit; each proxy's config allows at least this many)
#   PROXIES="ecslb nginx haproxy"
#   ECSLB_BIN=path   use this binary; skip `cargo build --release`
#   READY_TIMEOUT=15 seconds to wait for a proxy to answer
#   KEEP_TMP=1       keep the temp dir
#
# All traffic stays on 127.0.0.1; the client gives up after 60 s.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TPL_DIR="$ROOT/benches/load"
OUT_DIR="$ROOT/benches/out"
CONNS=${CONNS:-5000}
PROXIES=${PROXIES:-"ecslb nginx haproxy"}
READY_TIMEOUT=${READY_TIMEOUT:-15}
KEEP_TMP=${KEEP_TMP:-0}
LOG_TAG=idle_conns
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

[[ $CONNS =~ ^[1-9][0-9]*$ ]] || die "CONNS must be a positive integer (got '$CONNS')"
install_missing nginx haproxy curl python3 taskset setsid
build_ecslb
make_workdir idle
(($(ulimit -n) > CONNS + 100)) || die "open files limit $(ulimit -n) is too low for CONNS=$CONNS"
read -r P1 P2 P3 <<<"$(free_ports 3)"
FWD=$(forwarded_prefix)
start_backends

# The client: CONNS connections, one request each (200 at a time), all kept open;
# prints the proxy's RSS growth in bytes per connection.
cat >"$WORK/hold.py" <<'PY'
import asyncio, sys

port, conns, pid = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])

def rss_kib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

async def one():
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: idle.test\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await reader.read(4096)
        if not chunk:
            raise SystemExit("the proxy closed a connection before answering")
        head += chunk
    if not head.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"unexpected answer: {head[:40]!r}")
    return writer

async def main():
    before = rss_kib()
    open_ = []
    for start in range(0, conns, 200):
        open_ += await asyncio.gather(*(one() for _ in range(min(200, conns - start))))
    await asyncio.sleep(1)
    after = rss_kib()
    print(before, after, round((after - before) * 1024 / conns))
    for writer in open_:
        writer.close()

asyncio.run(asyncio.wait_for(main(), 60))
PY

STAMP=$(date +%Y%m%d-%H%M%S)
ROWS=()
for name in $PROXIES; do
    read -r port <<<"$(free_ports 1)"
    dir="$WORK/$name"
    mkdir -p "$dir"
    case $name in
    ecslb)
        render "$TPL_DIR/ecslb.toml.tmpl" "$dir/ecslb.toml" "$dir" "$port"
        RUST_LOG=warn start_bg "$dir/stdout.log" \
            taskset -c 0 "$ECSLB_BIN" run -c "$dir/ecslb.toml" --workers 1
        pid=$LAST_PID
        ;;
    nginx)
        render "$TPL_DIR/nginx.conf.tmpl" "$dir/nginx.conf" "$dir" "$port" "FWD=$FWD"
        sed -i "s/worker_connections [0-9]*;/worker_connections $((CONNS + 1000));/" "$dir/nginx.conf"
        start_nginx "$dir" 0
        pid=$LAST_PID
        ;;
    haproxy)
        render "$TPL_DIR/haproxy.cfg.tmpl" "$dir/haproxy.cfg" "$dir" "$port" "FWD=$FWD"
        sed -i "s/maxconn [0-9]*/maxconn $((CONNS + 1000))/" "$dir/haproxy.cfg"
        start_bg "$dir/stdout.log" taskset -c 0 haproxy -db -f "$dir/haproxy.cfg"
        pid=$LAST_PID
        ;;
    *) die "unknown proxy '$name'" ;;
    esac
    wait_ready "$port" "$pid" || die "$name did not answer on port $port"
    # nginx serves from its worker process, not the master we started.
    [[ $name == nginx ]] && pid=$(pgrep -P "$pid" | head -n 1)
    log "$name: opening $CONNS idle keep-alive connections"
    read -r before after per <<<"$(python3 "$WORK/hold.py" "$port" "$CONNS" "$pid")" ||
        die "$name: the client failed"
    ROWS+=("$(printf '%-8s %12s %12s %14s' "$name" "$before" "$after" "$per")")
    stop_pid "$LAST_PID"
done

REPORT="$OUT_DIR/idle-conns-$STAMP.txt"
mkdir -p "$OUT_DIR"
{
    echo "idle keep-alive connections: memory - $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "git: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')  $(host_line)"
    echo "$CONNS connections, one GET each, then held open; proxy: 1 worker on core 0"
    echo
    printf '%-8s %12s %12s %14s\n' proxy "RSS KiB then" "RSS KiB now" "bytes per conn"
    printf '%s\n' "${ROWS[@]}"
} | tee "$REPORT"
log "written to $REPORT"

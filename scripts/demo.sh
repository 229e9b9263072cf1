#!/usr/bin/env bash
# Demo: three local backends on 127.0.0.1:3001-3003 and ecslb in front of them on
# 127.0.0.1:8080 (admin on 127.0.0.1:9901), using config/local.toml (or the file given).
# Sends a few requests to show them spread over the backends, then keeps serving until
# Ctrl-C (or for DEMO_SECONDS seconds, if set).
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-config/local.toml}

echo "==> building ecslb (release; the first build takes a few minutes)"
cargo build --release
bin=target/release/ecslb

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

echo "==> starting backends on 127.0.0.1:3001-3003"
for n in 1 2 3; do
  python3 scripts/backend.py "backend-$n" "127.0.0.1:300$n" &
  pids+=($!)
done
for n in 1 2 3; do
  for _ in $(seq 1 50); do
    curl -fsS -o /dev/null "http://127.0.0.1:300$n/" 2>/dev/null && break
    sleep 0.1
  done
done

echo "==> checking $config"
"$bin" check -c "$config"

echo "==> starting ecslb on 127.0.0.1:8080"
"$bin" run -c "$config" &
pids+=($!)
for _ in $(seq 1 50); do
  curl -fsS -o /dev/null http://127.0.0.1:9901/ready 2>/dev/null && break
  sleep 0.1
done

echo "==> six requests through ecslb (round robin over three backends):"
for _ in 1 2 3 4 5 6; do curl -sS http://127.0.0.1:8080/; done
echo "==> a fixed response and a redirect:"
curl -sS http://127.0.0.1:8080/health
curl -sS -o /dev/null -w '%{http_code} -> %{redirect_url}\n' http://127.0.0.1:8080/old/page?x=1
echo "==> targets (admin API):"
curl -sS http://127.0.0.1:9901/v1/targets

if [[ -n "${DEMO_SECONDS:-}" ]]; then
  echo "==> serving for ${DEMO_SECONDS}s"
  sleep "$DEMO_SECONDS"
else
  echo "==> ecslb is serving on http://127.0.0.1:8080 — Ctrl-C to stop"
  wait
fi

#!/usr/bin/env bash
# Demo: an emulated ECS cluster (moto, patched by emulator/ecs_emulator.py) with an awsvpc
# service `web` (3 tasks) and a bridge-mode service `api` (2 tasks) whose tasks are real
# local HTTP servers on their discovered 127.x addresses, and ecslb in front of them on
# 127.0.0.1:8080 (admin 127.0.0.1:9901) with config/ecs.toml. Shows requests spread over
# the tasks, then scales `web` to 5 and shows ecslb following within a refresh.
# Serves until Ctrl-C (or for DEMO_SECONDS seconds, if set).
#
#   scripts/demo.sh                      # the ECS demo
#   scripts/demo.sh static               # static targets instead (config/local.toml)
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> building ecslb (release; the first build takes a few minutes)"
cargo build --release
bin=target/release/ecslb

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

wait_ready() {
  for _ in $(seq 1 100); do
    curl -fsS -o /dev/null http://127.0.0.1:9901/ready 2>/dev/null && return 0
    sleep 0.2
  done
  echo "ecslb did not become ready" >&2
  return 1
}

serve_until_stopped() {
  if [[ -n "${DEMO_SECONDS:-}" ]]; then
    echo "==> serving for ${DEMO_SECONDS}s"
    sleep "$DEMO_SECONDS"
  else
    echo "==> ecslb is serving on http://127.0.0.1:8080 — Ctrl-C to stop"
    wait
  fi
}

if [[ ${1:-ecs} == static ]]; then
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
  "$bin" check -c config/local.toml
  "$bin" run -c config/local.toml &
  pids+=($!)
  wait_ready
  echo "==> six requests through ecslb (round robin over three backends):"
  for _ in 1 2 3 4 5 6; do curl -sS http://127.0.0.1:8080/; done
  echo "==> a fixed response and a redirect:"
  curl -sS http://127.0.0.1:8080/health
  curl -sS -o /dev/null -w '%{http_code} -> %{redirect_url}\n' http://127.0.0.1:8080/old/page?x=1
  serve_until_stopped
  exit 0
fi

echo "==> the emulator's Python venv (moto; about a minute the first time)"
py=$(bash emulator/setup.sh | tail -n 1)

echo "==> starting the emulated ECS cluster"
exec 3< <("$py" emulator/ecs_emulator.py --stop-delay 2)
pids+=($!)
read -r ready endpoint <&3
[[ $ready == READY ]] || { echo "the emulator did not start" >&2; exit 1; }
echo "    moto on $endpoint"
export AWS_ENDPOINT_URL=$endpoint AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1

echo "==> seeding: cluster demo, services web (awsvpc x3) and api (bridge x2), one HTTP server per task"
exec 4< <("$py" emulator/seed.py "$endpoint" --backends)
pids+=($!)
while read -r line <&4; do
  echo "    $line"
  [[ $line == SERVING* ]] && break
done

"$bin" check -c config/ecs.toml
"$bin" run -c config/ecs.toml &
pids+=($!)
wait_ready
sleep 2.5 # two health checks

echo "==> /v1/targets (discovered from ECS):"
curl -sS http://127.0.0.1:9901/v1/targets | "$py" -c '
import json, sys
for g in json.load(sys.stdin)["target_groups"]:
    for t in g["targets"]:
        print("    %-4s %-22s %s" % (g["name"], t["target"], t["state"]))'
echo "==> six requests to the awsvpc service web:"
for _ in 1 2 3 4 5 6; do echo "    $(curl -sS http://127.0.0.1:8080/)"; done
echo "==> four requests to the bridge-mode service api (/api/*):"
for _ in 1 2 3 4; do echo "    $(curl -sS http://127.0.0.1:8080/api/x)"; done

echo "==> scaling web to 5 tasks (ECS UpdateService)"
"$py" - "$endpoint" <<'PY'
import sys, boto3
boto3.client("ecs", endpoint_url=sys.argv[1], region_name="us-east-1").update_service(cluster="demo", service="web", desiredCount=5)
PY
sleep 4 # a refresh, the new servers, two health checks
echo "==> ten requests to web now:"
for _ in $(seq 1 10); do echo "    $(curl -sS http://127.0.0.1:8080/)"; done | sort | uniq -c

serve_until_stopped

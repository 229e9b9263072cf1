#!/usr/bin/env bash
# The whole test suite: unit, integration and doc tests, plus a build of the benchmarks.
# Installs what the tests need when it is missing (curl, prometheus, the emulator's venv),
# then runs `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

# curl (a real client in the HTTP/2 tests), nginx (a real target, over HTTP/1.1 and
# HTTP/2) and Prometheus with promtool (the metrics tests scrape ecslb with a real
# Prometheus server), from Debian's packages.
missing=()
command -v curl >/dev/null || missing+=(curl)
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
command -v prometheus >/dev/null && command -v promtool >/dev/null || missing+=(prometheus)
if ((${#missing[@]})); then
  echo "==> installing ${missing[*]}"
  if [[ $(id -u) -eq 0 ]]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  else
    echo "missing: ${missing[*]} (install with apt-get install ${missing[*]})" >&2
    exit 1
  fi
fi

echo "==> the Python venv of the ECS emulator and the gRPC tests (.venv: moto, boto3, grpcio; about a minute the first time)"
bash emulator/setup.sh >/dev/null

echo "==> building and running the tests (the first build takes several minutes)"
cargo test --all-targets --no-fail-fast
cargo test --doc

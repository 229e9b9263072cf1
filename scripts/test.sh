#!/usr/bin/env bash
# The whole test suite: unit, integration and doc tests, plus a build of the benchmarks.
# Installs what the tests need when it is missing (curl), then runs `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v curl >/dev/null; then
  echo "==> installing curl"
  if [[ $(id -u) -eq 0 ]]; then
    apt-get update -qq && apt-get install -y -qq curl
  else
    echo "curl is missing: install it (apt-get install curl)" >&2
    exit 1
  fi
fi

echo "==> building and running the tests (the first build takes several minutes)"
cargo test --all-targets --no-fail-fast
cargo test --doc

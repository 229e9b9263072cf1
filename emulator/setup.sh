#!/usr/bin/env bash
# Creates the Python venv the ECS emulator and the gRPC test peers run in:
# $REPO/.venv (git-ignored).
# Idempotent: a no-op (well under a second) when the venv already matches
# emulator/requirements.txt. Prints the venv's python path on the last line.
#
#   emulator/setup.sh            # create or update the venv
#   FORCE=1 emulator/setup.sh    # reinstall the requirements
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
venv="$repo/.venv"
req="$here/requirements.txt"
py="$venv/bin/python"
marker="$venv/.ecslb-emulator-requirements"

if [[ -z "${FORCE:-}" && -x "$py" && -f "$marker" ]] && cmp -s "$req" "$marker" \
    && "$py" -c 'import moto, boto3, flask, flask_cors, grpc' 2>/dev/null; then
  echo "$py"
  exit 0
fi

python3="${PYTHON:-python3}"
command -v "$python3" >/dev/null || { echo "setup.sh: $python3 not found" >&2; exit 1; }
if [[ ! -x "$py" ]]; then
  echo "==> creating $venv" >&2
  "$python3" -m venv "$venv"
fi
echo "==> installing emulator/requirements.txt into $venv" >&2
# --progress-bar off keeps the log readable; the "Collecting/Installing" lines show progress.
"$py" -m pip install --disable-pip-version-check --progress-bar off -r "$req" 2>&1 \
  | grep -E '^(Collecting|Installing|Successfully|ERROR|error)' | sed -e 's/ (from .*//' >&2 || true
"$py" -c 'import moto, boto3, flask, flask_cors, grpc' \
  || { echo "setup.sh: the install failed (see above)" >&2; exit 1; }
cp "$req" "$marker"
echo "==> ready: $("$py" -c 'import moto; print("moto", moto.__version__)')" >&2
echo "$py"

#!/usr/bin/env bash
# Creates (or refreshes) the Python virtualenv .venv with the independent test clients
# (Microsoft's azure-eventhub, confluent-kafka) listed in tests/python/requirements.txt.
# Prints the venv's python path.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${IOTCONNECT_VENV:-.venv}"
REQ=tests/python/requirements.txt
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV" >&2
fi
stamp="$VENV/.requirements.sha"
want="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ" >&2
  echo "$want" >"$stamp"
fi
echo "$PWD/$VENV/bin/python"

#!/usr/bin/env bash
# Runs the Python tests against the emulator: creates/uses .venv at the repository root, builds the
# emulator example, runs pytest and prints pytest's summary. Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
if [ -z "${EMULATOR_CMD:-}" ]; then
    cargo build --quiet --example emulator
    export EMULATOR_CMD="$root/target/debug/examples/emulator"
fi
exec .venv/bin/python -m pytest -q -rA tests/python "$@"

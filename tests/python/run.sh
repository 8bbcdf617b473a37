#!/usr/bin/env bash
# Runs the Python tests against the emulator: creates/uses .venv at the repository root, builds the
# iotconnect-emulator binary (workspace member emulator/), runs pytest and prints pytest's summary. Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
# Optional: Microsoft's IoT Hub service client (uamqp wheel); its test is skipped without it.
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/python/requirements-iothub.txt \
    || echo "run.sh: azure-iot-hub not installed; its C2D test will be skipped" >&2
if [ -z "${EMULATOR_CMD:-}" ]; then
    cargo build --quiet -p iotconnect-emulator --bin iotconnect-emulator
    export EMULATOR_CMD="${CARGO_TARGET_DIR:-$root/target}/debug/iotconnect-emulator"
fi
exec .venv/bin/python -m pytest -q -rA tests/python "$@"

#!/usr/bin/env bash
# The test command: builds iotconnect, makes sure the test broker and the Python clients are there,
# then runs every Rust test (unit + integration against a real broker and the IoT Hub emulator) and the
# Python client tests. Each test binary starts its own broker on a free 127.0.0.1 port and stops it.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/kafka-broker.sh install
KAFKA_BROKER_BIN="$(scripts/kafka-broker.sh bin)"
export KAFKA_BROKER_BIN

if [ -f tests/python/requirements.txt ]; then
  scripts/python-env.sh >/dev/null
fi

echo "== cargo test"
cargo build --workspace --all-targets --locked
# Two test threads: the machine has 2 cores and each integration test runs a worker, an emulator and
# Kafka clients.
cargo test --workspace --all-targets --locked -- --test-threads=2

if [ -x tests/python/run.sh ]; then
  echo "== python client tests"
  tests/python/run.sh
fi

echo "== demo (scripts/demo.sh: both directions end to end)"
scripts/demo.sh >/tmp/iotconnect-demo-$$.log 2>&1 || { cat /tmp/iotconnect-demo-$$.log; exit 1; }
tail -1 /tmp/iotconnect-demo-$$.log; rm -f /tmp/iotconnect-demo-$$.log

if command -v systemd-analyze >/dev/null && [ -f config/iotconnect.service ]; then
  echo "== systemd-analyze verify config/iotconnect.service"
  scripts/verify-unit.sh
fi
echo "== all tests passed"

#!/usr/bin/env bash
# The test command. On a fresh Debian/Ubuntu machine it first installs what it needs (scripts/setup.sh),
# then: every Rust test (unit + integration against a real broker and the IoT Hub emulator), the Python
# client tests, the portable release (scripts/release.sh, cached by input hash) and its checks (glibc
# <= 2.27, NEEDED libraries of Ubuntu 18.04, the demo run with that binary), the demo, the .deb
# (install, systemd-analyze verify, remove, purge), the unit in a private root, and the README's
# "Tutorial by hand" executed command by command. Each test binary starts its own broker on a free
# 127.0.0.1 port and stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
t_start=$SECONDS
step() { printf '\n== %s  (%ds)\n' "$*" $((SECONDS - t_start)); }

scripts/setup.sh test
scripts/kafka-broker.sh install
KAFKA_BROKER_BIN="$(scripts/kafka-broker.sh bin)"
export KAFKA_BROKER_BIN

if [ -f tests/python/requirements.txt ]; then
  scripts/python-env.sh >/dev/null
fi

step "cargo test"
cargo build --workspace --all-targets --locked
# Two test threads: the machine has 2 cores and each integration test runs a worker, an emulator and
# Kafka clients.
cargo test --workspace --all-targets --locked -- --test-threads=2

if [ -x tests/python/run.sh ]; then
  step "python client tests"
  tests/python/run.sh
fi

step "demo (scripts/demo.sh: both directions end to end)"
scripts/demo.sh >/tmp/iotconnect-demo-$$.log 2>&1 || { cat /tmp/iotconnect-demo-$$.log; exit 1; }
tail -1 /tmp/iotconnect-demo-$$.log; rm -f /tmp/iotconnect-demo-$$.log

step "portable release (scripts/release.sh; rebuilt only when its inputs changed)"
scripts/release.sh >/dev/null

step "portable binary check (scripts/check-portable.sh)"
scripts/check-portable.sh dist/iotconnect

step "Debian package (scripts/check-deb.sh)"
scripts/check-deb.sh

if command -v systemd-analyze >/dev/null && [ -f config/iotconnect.service ]; then
  step "systemd-analyze verify config/iotconnect.service (private root, /usr/local/bin)"
  IOTCONNECT_BIN=dist/iotconnect scripts/verify-unit.sh
fi

step "README tutorial by hand (scripts/test-tutorial.sh)"
scripts/test-tutorial.sh

step "all tests passed in $((SECONDS - t_start)) s"

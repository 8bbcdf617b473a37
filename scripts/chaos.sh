#!/usr/bin/env bash
# The chaos suite (tests/chaos.rs) on its own, with its table.
#
#   scripts/chaos.sh           short counts (what scripts/test.sh runs as part of cargo test)
#   scripts/chaos.sh --long    the soak counts: kill -9 20x per direction, broker outage 30 s 3x,
#                              connection drops every 2 s for 2 minutes, 200 REST lifecycle calls
#
# Every scenario asserts nothing lost, order kept (per hub partition / per device), the offsets file
# decodable after every crash and everything committed at the end; the table shows what it counted.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--long" ]; then export CHAOS_LONG=1; fi
KAFKA_BROKER_BIN="${KAFKA_BROKER_BIN:-$(scripts/kafka-broker.sh bin)}"
export KAFKA_BROKER_BIN
report=target/chaos-report.tsv
rm -f "$report"
cargo build --workspace --quiet
cargo test -p iotconnect-tests --test chaos -- --test-threads=1
scripts/chaos-table.sh "$report"

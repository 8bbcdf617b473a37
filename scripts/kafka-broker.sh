#!/usr/bin/env bash
# A local Kafka-protocol broker for tests, benchmarks and the demo: Nisshi (the new name of Tansu),
# built from crates.io and cached outside the repository. It listens on 127.0.0.1 only.
#
#   scripts/kafka-broker.sh install            build/install once (~12-15 min cold, instant when cached)
#   scripts/kafka-broker.sh installed          exit 0 when the cached broker is there (builds nothing)
#   scripts/kafka-broker.sh start              start on $KAFKA_PORT (default 9092; 0 = a free port),
#                                              wait until it answers Kafka requests, print HOST:PORT
#   scripts/kafka-broker.sh stop               stop the broker this script started (by its PID file)
#   scripts/kafka-broker.sh status             running or not
#   scripts/kafka-broker.sh bin                print the broker binary's path
#
# Environment:
#   KAFKA_BROKER_VERSION   (0.7.0-pre.2; newer nisshi needs rustc 1.96, tansu 0.6 is broken)
#   KAFKA_BROKER_ROOT      install root (default ~/.cache/iotconnect/kafka-broker/<version>-<features>-o1)
#   KAFKA_PORT             listener port on 127.0.0.1 (default 9092; 0 picks a free one)
#   KAFKA_DATA_DIR         data + pid + log directory (default ${TMPDIR:-/tmp}/iotconnect-broker-<port>)
#   KAFKA_STORAGE          sqlite://broker.db (default; correct watermarks) or memory://bench/
#                          (fast, for throughput benchmarks only: its high watermark is wrong)
set -euo pipefail

VERSION="${KAFKA_BROKER_VERSION:-0.7.0-pre.2}"
FEATURES="libsql,dynostore"
ROOT="${KAFKA_BROKER_ROOT:-$HOME/.cache/iotconnect/kafka-broker/$VERSION-${FEATURES//,/-}-o1}"
BIN="$ROOT/bin/nisshi"
STORAGE="${KAFKA_STORAGE:-sqlite://broker.db}"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

PORT="${KAFKA_PORT:-9092}"
if [ "$PORT" = 0 ] && [ "${1:-}" = start ]; then PORT="$(free_port)"; fi
DATA="${KAFKA_DATA_DIR:-${TMPDIR:-/tmp}/iotconnect-broker-$PORT}"
PIDFILE="$DATA/broker.pid"
LOG="$DATA/broker.log"

installed() { [ -x "$BIN" ] && "$BIN" --version 2>/dev/null | grep -q -- "$VERSION"; }

install() {
  if installed; then echo "broker installed: $BIN" >&2; return 0; fi
  # One build at a time: a second caller waits for the first and then finds the broker installed.
  mkdir -p "$(dirname "$ROOT")"
  exec 9>"$ROOT.install-lock"
  if ! flock -n 9; then echo "another install of the broker is running; waiting for it ..." >&2; flock 9; fi
  if installed; then echo "broker installed: $BIN" >&2; return 0; fi
  local t0=$SECONDS
  echo "building the Kafka-protocol test broker nisshi $VERSION from crates.io (12-15 minutes on 2 cores) ..." >&2
  # Its own temporary target dir (no CARGO_TARGET_DIR), so the project's build is never disturbed.
  # opt-level 1: ~25% quicker to build, ~7% slower broker; a test broker needs no more.
  env -u CARGO_TARGET_DIR CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_DEBUG=false \
    cargo install "nisshi@$VERSION" --locked --no-default-features --features "$FEATURES" \
    --root "$ROOT" >&2
  echo "broker installed in $((SECONDS - t0))s: $BIN" >&2
}

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

start() {
  installed || install
  mkdir -p "$DATA"
  if running; then echo "127.0.0.1:$PORT"; return 0; fi
  # Run from $DATA: sqlite:// paths are relative to the working directory and the broker reads a
  # .env file from there. `exec` keeps $! equal to the broker's own PID.
  (
    cd "$DATA"
    exec env -u STORAGE_ENGINE -u LISTENER_URL -u ADVERTISED_LISTENER_URL \
      "$BIN" broker \
      --listener-url "tcp://127.0.0.1:$PORT" \
      --advertised-listener-url "tcp://127.0.0.1:$PORT" \
      --storage-engine "$STORAGE" >"$LOG" 2>&1 </dev/null
  ) &
  echo $! >"$PIDFILE"
  local deadline=$((SECONDS + 30))
  while [ $SECONDS -lt $deadline ]; do
    if ! running; then echo "broker exited during start-up; log $LOG:" >&2; cat "$LOG" >&2; return 1; fi
    # A Metadata round trip: the broker serves Kafka requests.
    if "$BIN" topic list --broker "tcp://127.0.0.1:$PORT" >/dev/null 2>&1; then
      echo "127.0.0.1:$PORT"; return 0
    fi
    sleep 0.2
  done
  echo "broker not ready after 30s; log $LOG:" >&2; cat "$LOG" >&2; stop; return 1
}

stop() {
  [ -f "$PIDFILE" ] || return 0
  local pid; pid="$(cat "$PIDFILE")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  fi
  rm -f "$PIDFILE"
}

status() {
  if running; then echo "running pid $(cat "$PIDFILE") on 127.0.0.1:$PORT"; else echo "not running"; return 1; fi
}

case "${1:-}" in
  install) install ;;
  installed) installed ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  bin) installed || install; echo "$BIN" ;;
  *) sed -n '2,20p' "$0"; exit 1 ;;
esac

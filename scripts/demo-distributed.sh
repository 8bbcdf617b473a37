#!/usr/bin/env bash
# Distributed mode in one command: two `iotconnect distributed` workers share one (emulated) IoT Hub
# with 4 partitions; worker B is killed with -9 and worker A takes over its partitions; every event
# reaches `iotin` (exactly once with DEMO_EOS=1 on a broker with full transactions). 127.0.0.1 only.
#
#   scripts/demo-distributed.sh      (also: scripts/demo.sh distributed)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/iotconnect-demo-dist.XXXXXX")"
PIDS=()
cleanup() {
  local rc=$?
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  KAFKA_DATA_DIR="$WORK/broker" KAFKA_PORT="${BROKER_PORT:-0}" scripts/kafka-broker.sh stop >/dev/null 2>&1 || true
  if [ $rc -ne 0 ]; then echo "demo failed (exit $rc); logs kept in $WORK";
  elif [ -n "${DEMO_KEEP:-}" ]; then echo "logs kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "building iotconnect"
cargo build --quiet --workspace
BIN="$ROOT/target/debug/iotconnect"
EMU_BIN="$ROOT/target/debug/iotconnect-emulator"
PY="$(scripts/python-env.sh)"
# DEMO_EOS=1: exactly.once.source.support=enabled (see README "Distributed mode" for what the test
# broker lacks); default: at-least-once.
EOS=disabled; [ "${DEMO_EOS:-0}" = 1 ] && EOS=enabled
port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

say "starting the broker and the IoT Hub emulator (4 partitions)"
BROKER_PORT="$(port)"; export BROKER_PORT
BOOTSTRAP="$(KAFKA_DATA_DIR="$WORK/broker" KAFKA_PORT="$BROKER_PORT" scripts/kafka-broker.sh start)"
"$(scripts/kafka-broker.sh bin)" topic create iotin --partitions 3 --broker "tcp://$BOOTSTRAP" >/dev/null
"$EMU_BIN" --partitions 4 --amqp-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --no-auth \
  >"$WORK/emulator.json" 2>"$WORK/emulator.log" &
PIDS+=($!)
for _ in $(seq 1 100); do [ -s "$WORK/emulator.json" ] && break; sleep 0.1; done
info() { "$PY" -c "import json; print(json.load(open('$WORK/emulator.json'))['$1'])"; }
HTTP="$(info httpEndpoint)"

say "one connector file (the same on both workers) and one worker file each"
cat >"$WORK/source.properties" <<EOF
name=AzureIotHubConnector
connector.class=com.microsoft.azure.iot.kafka.connect.source.IotHubSourceConnector
tasks.max=1
Kafka.Topic=iotin
IotHub.ConnectionString=$(info eventHubConnectionString)
IotHub.CustomEndpoint=$(info amqpEndpoint)
BatchSize=50
ReceiveTimeout=1
EOF
A_PORT="$(port)"; B_PORT="$(port)"
for w in A B; do
  p=A_PORT; [ $w = B ] && p=B_PORT
  cat >"$WORK/worker-$w.properties" <<EOF
bootstrap.servers=$BOOTSTRAP
key.converter=org.apache.kafka.connect.json.JsonConverter
value.converter=org.apache.kafka.connect.json.JsonConverter
key.converter.schemas.enable=false
value.converter.schemas.enable=false
group.id=iotconnect-demo
config.storage.topic=iotconnect-demo-configs
offset.storage.topic=iotconnect-demo-offsets
status.storage.topic=iotconnect-demo-status
config.storage.replication.factor=1
offset.storage.replication.factor=1
status.storage.replication.factor=1
exactly.once.source.support=$EOS
session.timeout.ms=6000
heartbeat.interval.ms=1000
listeners=http://127.0.0.1:${!p}
EOF
done
grep -E '^(group.id|.*storage.topic|exactly.once|session)' "$WORK/worker-A.properties" | sed 's/^/  /'

start() {
  "$BIN" distributed "$WORK/worker-$1.properties" "$WORK/source.properties" 2>"$WORK/worker-$1.log" &
  PIDS+=($!)
  eval "PID_$1=$!"
  for _ in $(seq 1 600); do
    grep -q "Kafka Connect started" "$WORK/worker-$1.log" 2>/dev/null && return 0
    sleep 0.1
  done
  cat "$WORK/worker-$1.log"; exit 1
}
status() { curl -fsS "http://127.0.0.1:$A_PORT/connectors/AzureIotHubConnector/status"; }
owners() { status | "$PY" -c "import json,sys; s=json.load(sys.stdin); print(' '.join('%s:%s@%s' % (t['id'], t['state'], t['worker_id']) for t in s['tasks']))"; }

say "starting worker A (REST $A_PORT) and worker B (REST $B_PORT)"
start A; start B
for _ in $(seq 1 300); do
  o="$(owners)"
  if ! grep -q UNASSIGNED <<<"$o" && grep -q ":$A_PORT" <<<"$o" && grep -q ":$B_PORT" <<<"$o"; then break; fi
  sleep 0.2
done
echo "  hub partition:state@worker  $(owners)"

send() {
  for i in $(seq "$1" "$2"); do
    dev="device-$((i % 8))"
    curl -fsS -X POST "$HTTP/devices/$dev/messages/events?api-version=2020-03-13" \
      -H 'Content-Type: application/json' --data "{\"reading\":$i}"
  done
}
say "devices send 100 events"
send 1 100

say "kill -9 worker B"
kill -KILL "$PID_B"
T0=$(date +%s.%N)
for _ in $(seq 1 600); do
  o="$(owners)"
  if ! grep -q ":$B_PORT" <<<"$o" && ! grep -q UNASSIGNED <<<"$o"; then break; fi
  sleep 0.1
done
T1=$(date +%s.%N)
echo "  worker A reads every partition $("$PY" -c "print(round($T1-$T0,1))") s after the kill (session.timeout.ms=6000)"
echo "  hub partition:state@worker  $(owners)"

say "devices send 100 more events"
send 101 200

say "iotin, read_committed: every event there ($([ $EOS = enabled ] && echo 'exactly once' || echo 'at least once'))"
"$PY" - "$BOOTSTRAP" 200 "$EOS" <<'PYEOF'
import sys, time, json
from confluent_kafka import Consumer, TopicPartition
boot, n, eos = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "enabled"
c = Consumer({"bootstrap.servers": boot, "group.id": "demo-check", "isolation.level": "read_committed",
              "enable.auto.commit": False})
c.assign([TopicPartition("iotin", p, 0) for p in range(3)])
seen, dups, deadline = set(), 0, time.time() + 90
while len(seen) < n and time.time() < deadline:
    m = c.poll(0.5)
    if m is None or m.error():
        continue
    v = json.loads(m.value())
    k = (v["deviceId"], v["sequenceNumber"])
    dups += k in seen
    seen.add(k)
end = time.time() + 3
while time.time() < end:   # anything late would be a duplicate
    m = c.poll(0.5)
    if m is not None and not m.error():
        v = json.loads(m.value()); k = (v["deviceId"], v["sequenceNumber"]); dups += k in seen; seen.add(k)
c.close()
print(f"  events sent: {n}, distinct on iotin: {len(seen)}, duplicates: {dups}")
sys.exit(0 if len(seen) == n and (dups == 0 or not eos) else 1)
PYEOF

say "the offsets topic, in Kafka Connect's format"
"$BIN" offsets show-topic --topic iotconnect-demo-offsets --bootstrap "$BOOTSTRAP" | sed 's/^/  /'

say "stopping worker A (SIGTERM: finishes its transactions, leaves the group)"
kill -TERM "$PID_A"; wait "$PID_A"
grep -E "Kafka Connect stopped" "$WORK/worker-A.log" | sed 's/^/  /'
say "demo complete: two workers shared the hub; A took over B's partitions; every event on iotin"

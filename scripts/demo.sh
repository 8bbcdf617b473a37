#!/usr/bin/env bash
# The HDInsight "Kafka + IoT Hub" tutorial, runnable in one command on this machine:
#   builds iotconnect, starts the Kafka-protocol broker and the IoT Hub emulator (simulated devices send
#   telemetry over IoT Hub's device REST API), runs `iotconnect standalone` with the tutorial's worker,
#   source and sink files (filled in from the emulator's connection info), shows records arriving on
#   `iotin`, types the tutorial's cloud-to-device message into `iotout` and shows it reaching the device,
#   then stops everything it started. Everything listens on 127.0.0.1 only.
#
#   scripts/demo.sh             (debug build; DEMO_RELEASE=1 for a release build;
#                               IOTCONNECT_BIN=dist/iotconnect runs that binary as the worker)
#   scripts/demo.sh distributed (distributed mode: see scripts/demo-distributed.sh)
# On a fresh Debian/Ubuntu machine it first installs the packages the build needs (scripts/setup.sh).
set -euo pipefail
# [dist] `scripts/demo.sh distributed`: two workers sharing a hub, one taking over (scripts/demo-distributed.sh)
if [ "${1:-}" = distributed ]; then exec "$(dirname "$0")/demo-distributed.sh"; fi
cd "$(dirname "$0")/.."
ROOT="$PWD"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/iotconnect-demo.XXXXXX")"
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

# What a fresh Debian/Ubuntu machine lacks (as root: installed; otherwise the exact command, then stop).
scripts/setup.sh demo

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
if ! scripts/kafka-broker.sh installed 2>/dev/null; then
  say "one-time: building the Kafka-protocol test broker (nisshi) from crates.io"
  echo "This takes 12-15 minutes on 2 cores, once: it is cached in ~/.cache/iotconnect. Progress follows."
fi
scripts/kafka-broker.sh install

if [ -d emulator ]; then EMU_PKG=(--workspace); else EMU_PKG=(); fi
if [ -n "${IOTCONNECT_BIN:-}" ]; then
  say "worker binary: $IOTCONNECT_BIN; building the IoT Hub emulator (debug)"
  cargo build "${EMU_PKG[@]}"
  BIN="$IOTCONNECT_BIN"
else
  say "building iotconnect (the first build compiles ~350 crates: several minutes on 2 cores; then seconds)"
  if [ "${DEMO_RELEASE:-0}" = 1 ]; then cargo build --release "${EMU_PKG[@]}"; BIN="$TARGET_DIR/release/iotconnect";
  else cargo build "${EMU_PKG[@]}"; BIN="$TARGET_DIR/debug/iotconnect"; fi
fi
# The emulator: its own binary next to the worker's, or (older layout) the `iotconnect emulator` subcommand.
PROFILE=debug; [ "${DEMO_RELEASE:-0}" = 1 ] && [ -z "${IOTCONNECT_BIN:-}" ] && PROFILE=release
if [ -x "$TARGET_DIR/$PROFILE/iotconnect-emulator" ]; then EMU=("$TARGET_DIR/$PROFILE/iotconnect-emulator")
else EMU=("$TARGET_DIR/$PROFILE/iotconnect" emulator); fi
say "Python test clients (confluent-kafka) in .venv"
PY="$(scripts/python-env.sh)"   # Python confluent-kafka: the independent Kafka client

say "starting the Kafka-protocol broker (nisshi, SQLite storage)"
BROKER_PORT="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
export BROKER_PORT
BOOTSTRAP="$(KAFKA_DATA_DIR="$WORK/broker" KAFKA_PORT="$BROKER_PORT" scripts/kafka-broker.sh start)"
BROKER_BIN="$(scripts/kafka-broker.sh bin)"
for t in iotin iotout; do "$BROKER_BIN" topic create "$t" --partitions 8 --broker "tcp://$BOOTSTRAP" >/dev/null; done
echo "broker at $BOOTSTRAP, topics iotin and iotout (8 partitions, as in the tutorial)"

say "starting the IoT Hub emulator"
"${EMU[@]}" --partitions 4 --amqp-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --no-auth \
  >"$WORK/emulator.json" 2>"$WORK/emulator.log" &
PIDS+=($!)
for _ in $(seq 1 100); do [ -s "$WORK/emulator.json" ] && break; sleep 0.1; done
info() { "$PY" -c "import json,sys; print(json.load(open('$WORK/emulator.json'))['$1'])"; }
HTTP="$(info httpEndpoint)"; AMQP="$(info amqpEndpoint)"
echo "emulator: AMQP $AMQP, device REST API $HTTP"

say "writing the tutorial's properties files (filled in from the emulator)"
sed -e "s|^bootstrap.servers=.*|bootstrap.servers=$BOOTSTRAP|" \
    -e "s|^offset.storage.file.filename=.*|offset.storage.file.filename=$WORK/connect.offsets|" \
    -e "s|^offset.flush.interval.ms=.*|offset.flush.interval.ms=2000|" \
    -e "s|^listeners=.*|listeners=http://127.0.0.1:0|" \
    config/connect-standalone.properties >"$WORK/connect-standalone.properties"
REST_PORT="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
sed -i "s|^listeners=.*|listeners=http://127.0.0.1:$REST_PORT|" "$WORK/connect-standalone.properties"
sed -e "s|^IotHub.EventHubCompatibleName=.*|IotHub.EventHubCompatibleName=$(info eventHubCompatibleName)|" \
    -e "s|^IotHub.EventHubCompatibleEndpoint=.*|IotHub.EventHubCompatibleEndpoint=$(info eventHubCompatibleEndpoint)|" \
    -e "s|^IotHub.AccessKeyValue=.*|IotHub.AccessKeyValue=$(info accessKeyValue)|" \
    config/connect-iothub-source.properties >"$WORK/connect-iothub-source.properties"
echo "IotHub.CustomEndpoint=$AMQP" >>"$WORK/connect-iothub-source.properties"
sed -e "s|^IotHub.ConnectionString=.*|IotHub.ConnectionString=$(info serviceConnectionString)|" \
    config/connect-iothub-sink.properties >"$WORK/connect-iothub-sink.properties"
echo "IotHub.CustomEndpoint=$AMQP" >>"$WORK/connect-iothub-sink.properties"
"$BIN" validate "$WORK/connect-standalone.properties" "$WORK/connect-iothub-source.properties" \
  "$WORK/connect-iothub-sink.properties" >/dev/null

say "running: iotconnect standalone connect-standalone.properties connect-iothub-source.properties connect-iothub-sink.properties"
"$BIN" standalone "$WORK/connect-standalone.properties" "$WORK/connect-iothub-source.properties" \
  "$WORK/connect-iothub-sink.properties" 2>"$WORK/worker.log" &
WORKER=$!
PIDS+=($WORKER)
for _ in $(seq 1 300); do
  grep -q "Kafka Connect started" "$WORK/worker.log" 2>/dev/null && break
  kill -0 $WORKER 2>/dev/null || { cat "$WORK/worker.log"; exit 1; }
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$REST_PORT/connectors?expand=status" | "$PY" -m json.tool

say "simulated devices send telemetry (IoT Hub device REST API: POST /devices/{id}/messages/events)"
N=0
for i in 1 2 3 4 5; do
  for dev in myDeviceId sensor-kitchen sensor-garage; do
    body="{\"deviceId\":\"$dev\",\"temperature\":$((18 + RANDOM % 10)).$((RANDOM % 10)),\"reading\":$i}"
    curl -fsS -X POST "$HTTP/devices/$dev/messages/events?api-version=2020-03-13" \
      -H 'Content-Type: application/json' -H "iothub-app-temperatureAlert: false" --data "$body"
    N=$((N + 1))
  done
done
echo "sent $N events from 3 devices"

say "records arriving on iotin (read with Python confluent-kafka; StringConverter => Struct{...})"
"$PY" - "$BOOTSTRAP" "$N" <<'PYEOF'
import sys, time
from confluent_kafka import Consumer, TopicPartition
boot, n = sys.argv[1], int(sys.argv[2])
c = Consumer({"bootstrap.servers": boot, "group.id": "demo-reader", "auto.offset.reset": "earliest",
              "enable.auto.commit": False, "session.timeout.ms": 6000})
md = c.list_topics("iotin", timeout=10)
c.assign([TopicPartition("iotin", p, 0) for p in md.topics["iotin"].partitions])
got, deadline = 0, time.time() + 60
while got < n and time.time() < deadline:
    m = c.poll(0.5)
    if m is None or m.error():
        continue
    got += 1
    v = m.value().decode()
    print(f"  iotin[{m.partition()}]@{m.offset()}: {v[:150]}{'...' if len(v) > 150 else ''}")
c.close()
if got < n:
    sys.exit(f"only {got} of {n} records arrived on iotin")
print(f"{got} records on iotin")
PYEOF

say "typing the tutorial's C2D message into iotout"
MSG='{"messageId":"msg1","message":"Turn On","deviceId":"myDeviceId"}'
echo "  $MSG"
"$PY" - "$BOOTSTRAP" "$MSG" <<'PYEOF'
import sys
from confluent_kafka import Producer
p = Producer({"bootstrap.servers": sys.argv[1]})
p.produce("iotout", value=sys.argv[2].encode())
assert p.flush(15) == 0, "iotout record not acknowledged"
PYEOF

say "the device receives it (GET /devices/myDeviceId/messages/deviceBound)"
for _ in $(seq 1 300); do
  code="$(curl -sS -o "$WORK/c2d.body" -D "$WORK/c2d.headers" -w '%{http_code}' \
    "$HTTP/devices/myDeviceId/messages/deviceBound?api-version=2020-03-13")"
  [ "$code" = 200 ] && break
  sleep 0.1
done
[ "$code" = 200 ] || { echo "no cloud-to-device message reached myDeviceId"; tail -50 "$WORK/worker.log"; exit 1; }
grep -i -E '^(iothub-messageid|iothub-to|iothub-ack|etag)' "$WORK/c2d.headers" | sed 's/^/  /'
echo "  body: $(cat "$WORK/c2d.body")"
etag="$(grep -i '^etag' "$WORK/c2d.headers" | cut -d' ' -f2 | tr -d '\r"')"
curl -fsS -X DELETE "$HTTP/devices/myDeviceId/messages/deviceBound/$etag?api-version=2020-03-13" >/dev/null
echo "  completed by the device"

say "connector status and metrics (REST on 127.0.0.1:$REST_PORT)"
curl -fsS "http://127.0.0.1:$REST_PORT/connectors/AzureIotHubConnector/status"; echo
curl -fsS "http://127.0.0.1:$REST_PORT/connectors/AzureIotHubSinkConnector/status"; echo
curl -fsS "http://127.0.0.1:$REST_PORT/metrics" | grep -E '^iotconnect_(source_record_write|c2d_accepted)_total' || true

say "stopping (SIGTERM: final offset commit, exit 0)"
kill -TERM $WORKER
wait $WORKER
grep -E "commitOffsets successfully|Kafka Connect stopped" "$WORK/worker.log" | tail -3 | sed 's/^/  /'
"$BIN" offsets show "$WORK/connect.offsets" | sed 's/^/  /'
say "demo complete: telemetry IoT Hub -> iotin, and iotout -> device, both worked"

#!/usr/bin/env bash
# Operating iotconnect with the same curl calls as a Kafka Connect worker (REST on 127.0.0.1:8083 by
# default; set REST=http://host:port). Run a single section: examples/ops.sh status
set -euo pipefail
REST="${REST:-http://127.0.0.1:8083}"
SRC="${SRC:-AzureIotHubConnector}"
SINK="${SINK:-AzureIotHubSinkConnector}"
j() { if command -v python3 >/dev/null; then python3 -m json.tool; else cat; fi; }

case "${1:-help}" in
  version)   curl -fsS "$REST/" | j ;;                                   # {"version","commit","kafka_cluster_id"}
  list)      curl -fsS "$REST/connectors" | j ;;                         # ["AzureIotHubConnector", ...]
  status)    curl -fsS "$REST/connectors?expand=status" | j ;;           # every connector's status
  info)      curl -fsS "$REST/connectors/$SRC" | j                       # config (secrets [hidden]) + tasks
             curl -fsS "$REST/connectors/$SRC/tasks" | j ;;
  task)      curl -fsS "$REST/connectors/$SRC/tasks/0/status" | j ;;     # RUNNING / PAUSED / FAILED + trace
  pause)     curl -fsS -X PUT "$REST/connectors/$SRC/pause" -o /dev/null -w '%{http_code}\n' ;;   # 202
  resume)    curl -fsS -X PUT "$REST/connectors/$SRC/resume" -o /dev/null -w '%{http_code}\n' ;;  # 202
  stop)      curl -fsS -X PUT "$REST/connectors/$SRC/stop" -o /dev/null -w '%{http_code}\n' ;;    # 204
  restart)   curl -fsS -X POST "$REST/connectors/$SRC/restart?includeTasks=true&onlyFailed=true" | j ;;
  restart-task) curl -fsS -X POST "$REST/connectors/$SRC/tasks/0/restart" -o /dev/null -w '%{http_code}\n' ;;
  offsets)   curl -fsS "$REST/connectors/$SRC/offsets" | j               # hub partitions -> EventHubOffset
             curl -fsS "$REST/connectors/$SINK/offsets" | j ;;           # kafka_topic/partition -> kafka_offset
  plugins)   curl -fsS "$REST/connector-plugins" | j ;;
  loggers)   curl -fsS "$REST/admin/loggers" | j ;;
  debug)     curl -fsS -X PUT -H 'Content-Type: application/json' -d '{"level":"DEBUG"}' \
               "$REST/admin/loggers/iotconnect::source" | j ;;           # runtime log level
  health)    curl -fsS "$REST/health" | j; curl -fsS "$REST/healthz"; curl -sS "$REST/readyz" ;;
  metrics)   curl -fsS "$REST/metrics" | grep -E '^iotconnect_' ;;       # Prometheus text format
  lag)       curl -fsS "$REST/metrics" | grep '^iotconnect_source_partition_lag_events' ;;
  read-iotin)
    # On the HDInsight edge node (Kafka's own tools):
    echo "/usr/hdp/current/kafka-broker/bin/kafka-console-consumer.sh --bootstrap-server \$KAFKABROKERS --topic iotin --from-beginning"
    # Against the local test broker (scripts/kafka-broker.sh), with its own CLI:
    echo "\$(scripts/kafka-broker.sh bin) cat consume iotin --broker tcp://127.0.0.1:9092"
    ;;
  send-c2d)
    # The tutorial's cloud-to-device message, typed into iotout (edge node):
    echo "/usr/hdp/current/kafka-broker/bin/kafka-console-producer.sh --broker-list \$KAFKABROKERS --topic iotout"
    echo '{"messageId":"msg1","message":"Turn On","deviceId":"myDeviceId"}'
    ;;
  *) sed -n '2,4p' "$0"; grep -oE '^  [a-z-]+\)' "$0" | tr -d ' )' | paste -sd' ' ;;
esac

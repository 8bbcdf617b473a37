#!/usr/bin/env bash
# kafka-console-consumer.sh / kafka-console-producer.sh for the local broker, without a JVM: a few lines
# of Python confluent-kafka (in the repository's .venv, created by scripts/python-env.sh).
#
#   scripts/kafka-console.sh consume TOPIC [--from-beginning] [--max-messages N] [--timeout-ms MS]
#       prints each record's value, one a line; with --max-messages exits 0 after N records and 1 when
#       fewer arrived within --timeout-ms (default 60000)
#   scripts/kafka-console.sh produce TOPIC      one record per line of standard input (acknowledged)
#
# Environment: KAFKABROKERS (host:port, default 127.0.0.1:9092), as in the HDInsight tutorial.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
PY="$("$here/python-env.sh")"
# The program goes in with -c: standard input stays the caller's (produce reads it).
code="$(cat <<'PYEOF'
import os, sys, time, uuid
from confluent_kafka import Consumer, Producer, TopicPartition

def usage():
    sys.exit("usage: kafka-console.sh consume TOPIC [--from-beginning] [--max-messages N] [--timeout-ms MS]\n"
             "       kafka-console.sh produce TOPIC")

args = sys.argv[1:]
if len(args) < 2:
    usage()
mode, topic, rest = args[0], args[1], args[2:]
boot = os.environ.get("KAFKABROKERS", "127.0.0.1:9092")

if mode == "produce":
    p = Producer({"bootstrap.servers": boot, "acks": "all"})
    n = 0
    for line in sys.stdin:
        line = line.rstrip("\n")
        if line:
            p.produce(topic, value=line.encode())
            n += 1
    if n == 0:
        sys.exit("no input lines: nothing written")
    left = p.flush(30)
    if left:
        sys.exit(f"{left} of {n} records not acknowledged by {boot}")
    print(f"{n} record(s) written to {topic}", file=sys.stderr)
elif mode == "consume":
    beginning, maxn, timeout_ms = False, None, 60000
    i = 0
    while i < len(rest):
        if rest[i] == "--from-beginning":
            beginning = True
        elif rest[i] == "--max-messages":
            i += 1; maxn = int(rest[i])
        elif rest[i] == "--timeout-ms":
            i += 1; timeout_ms = int(rest[i])
        else:
            usage()
        i += 1
    c = Consumer({"bootstrap.servers": boot, "group.id": f"console-consumer-{uuid.uuid4()}",
                  "enable.auto.commit": False, "session.timeout.ms": 6000})
    md = c.list_topics(topic, timeout=10)
    if topic not in md.topics or md.topics[topic].error is not None:
        sys.exit(f"no topic {topic} on {boot}")
    parts = list(md.topics[topic].partitions)
    start = []
    for p in parts:
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        start.append(TopicPartition(topic, p, lo if beginning else hi))
    c.assign(start)
    got, deadline = 0, time.time() + timeout_ms / 1000
    while (maxn is None or got < maxn) and time.time() < deadline:
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        got += 1
        print(m.value().decode(errors="replace"), flush=True)
    c.close()
    print(f"Processed a total of {got} messages", file=sys.stderr)
    if maxn is not None and got < maxn:
        sys.exit(1)
else:
    usage()
PYEOF
)"
exec "$PY" -c "$code" "$@"

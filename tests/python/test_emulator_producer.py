"""Microsoft's Python Event Hubs producer (azure-eventhub ``EventHubProducerClient``) sending to the
emulator like to a real Event Hub, read back with ``EventHubConsumerClient``: to the entity (the hub
assigns partitions, or by partition key), to one partition, over plain AMQP and over WebSockets.

Events from producers carry no ``iothub-*`` annotations; application properties (CloudEvents'
``cloudEvents:type`` as Azure Digital Twins sends them) and system properties arrive unchanged.
"""

import json
import os
import select
import shlex
import subprocess
import threading
import urllib.request

import pytest
from azure.eventhub import EventData, EventHubConsumerClient, EventHubProducerClient, TransportType

HUB = "prodhub"
PARTITIONS = 4


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    cmd = os.environ.get("EMULATOR_CMD")
    if not cmd:
        pytest.fail("EMULATOR_CMD is not set (use tests/python/run.sh)")
    log = open(tmp_path_factory.mktemp("emu") / "emulator.log", "w")
    args = shlex.split(cmd) + [
        "--hub-name", HUB,
        "--partitions", str(PARTITIONS),
        "--amqp-listen", "127.0.0.1:0",
        "--http-listen", "127.0.0.1:0",
        "--ws-listen", "127.0.0.1:0",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        assert ready, "the emulator printed no connection info within 120 s"
        yield json.loads(proc.stdout.readline())
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def stats(info):
    with urllib.request.urlopen(f"{info['httpEndpoint']}/emulator/stats", timeout=10) as r:
        return json.loads(r.read())


def last_seq(info):
    return {i: p["lastEnqueuedSequenceNumber"] for i, p in enumerate(stats(info)["partitions"])}


def read_all(info, partition, n, **client_kwargs):
    """Reads events from the start of ``partition`` until ``n`` arrived (60 s deadline)."""
    got = []
    done = threading.Event()

    def on_event(_ctx, ev):
        if ev is None:
            return
        got.append(ev)
        if len(got) >= n:
            done.set()

    client = EventHubConsumerClient.from_connection_string(
        info["producerConnectionString"], consumer_group="$Default", **client_kwargs
    )
    t = threading.Thread(
        target=client.receive,
        kwargs=dict(on_event=on_event, partition_id=str(partition), starting_position="-1"),
        daemon=True,
    )
    t.start()
    ok = done.wait(60)
    client.close()
    t.join(30)
    assert ok, f"received {len(got)} of {n} events on partition {partition}"
    return got


def body(ev) -> bytes:
    return b"".join(ev.body) if not isinstance(ev.body, (bytes, bytearray)) else bytes(ev.body)


def test_producer_to_a_partition_with_cloud_events_properties(emulator):
    before = last_seq(emulator)[2]
    producer = EventHubProducerClient.from_connection_string(emulator["producerConnectionString"])
    with producer:
        batch = producer.create_batch(partition_id="2")
        for i in range(3):
            ev = EventData(json.dumps({"twin": "thermostat-1", "i": i}))
            ev.content_type = "application/json"
            ev.message_id = f"adt-{i}"
            ev.properties = {
                "cloudEvents:type": "Microsoft.DigitalTwins.Twin.Update",
                "cloudEvents:source": "adt.example",
                "cloudEvents:id": f"id-{i}",
                "count": i,
            }
            batch.add(ev)
        producer.send_batch(batch)
    assert last_seq(emulator)[2] == before + 3
    events = read_all(emulator, 2, before + 4)[-3:]
    for i, ev in enumerate(events):
        assert json.loads(body(ev)) == {"twin": "thermostat-1", "i": i}
        assert ev.message_id == f"adt-{i}"
        assert ev.content_type == "application/json"
        props = {k.decode() if isinstance(k, bytes) else k: v for k, v in ev.properties.items()}
        val = props["cloudEvents:type"]
        assert (val.decode() if isinstance(val, bytes) else val) == "Microsoft.DigitalTwins.Twin.Update"
        assert props["count"] == i
        # A plain Event Hub event: no IoT Hub annotations.
        annotations = {k.decode() if isinstance(k, bytes) else k for k in ev.raw_amqp_message.annotations}
        assert not any(a.startswith("iothub-") for a in annotations), annotations
        assert ev.system_properties.get(b"iothub-connection-device-id") is None


def test_producer_to_the_entity_spreads_and_partition_key_sticks(emulator):
    before = last_seq(emulator)
    producer = EventHubProducerClient.from_connection_string(emulator["producerConnectionString"])
    with producer:
        for i in range(PARTITIONS * 2):
            batch = producer.create_batch()
            batch.add(EventData(f"rr-{i}"))
            producer.send_batch(batch)
        keyed = producer.create_batch(partition_key="sensor-7")
        for i in range(5):
            keyed.add(EventData(f"keyed-{i}"))
        producer.send_batch(keyed)
    after = last_seq(emulator)
    grown = {p: after[p] - before[p] for p in after}
    assert sum(grown.values()) == PARTITIONS * 2 + 5
    assert sum(1 for g in grown.values() if g > 0) >= 2, f"the hub used one partition only: {grown}"
    # The keyed batch stayed together on one partition, in order.
    keyed_partition = [p for p, g in grown.items() if g >= 5]
    assert keyed_partition, grown
    p = keyed_partition[0]
    evs = [body(e) for e in read_all(emulator, p, after[p] + 1)]
    keyed_bodies = [b for b in evs if b.startswith(b"keyed-")]
    assert keyed_bodies == [f"keyed-{i}".encode() for i in range(5)]


def test_producer_and_consumer_over_websockets(emulator):
    assert emulator["wsEndpoint"].startswith("ws://")
    before = last_seq(emulator)[1]
    # The client appends /$servicebus/websocket to custom_endpoint_address itself and dials ws://
    # (UseDevelopmentEmulator turns TLS off), so it gets host:port only.
    kwargs = dict(
        transport_type=TransportType.AmqpOverWebsocket,
        custom_endpoint_address=f"sb://{emulator['wsHostPort']}",
    )
    producer = EventHubProducerClient.from_connection_string(emulator["producerConnectionString"], **kwargs)
    with producer:
        batch = producer.create_batch(partition_id="1")
        batch.add(EventData("over-ws"))
        producer.send_batch(batch)
    assert last_seq(emulator)[1] == before + 1
    evs = read_all(emulator, 1, before + 2, **kwargs)
    assert body(evs[-1]) == b"over-ws"

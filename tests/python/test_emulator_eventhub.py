"""Microsoft's Python Event Hubs client (azure-eventhub, pure-Python AMQP) against the emulator.

The emulator is started from ``EMULATOR_CMD`` (run.sh builds ``iotconnect-emulator``); it
prints one JSON line with its connection info. Telemetry goes in through the device HTTP API with a
real SAS token, so both token conventions are checked: IoT Hub's (HTTP, base64-decoded key) and Event
Hubs' (the Python client's CBS put-token, raw key bytes).
"""

import base64
import datetime
import hashlib
import hmac
import json
import os
import select
import shlex
import subprocess
import threading
import time
import urllib.parse
import urllib.request

import pytest
from azure.eventhub import EventHubConsumerClient

HUB = "pyhub"
DEVICE = "py-dev-1"


def fnv1a_partition(device_id: str, partitions: int) -> int:
    """The emulator's documented device -> partition mapping (32-bit FNV-1a)."""
    h = 0x811C9DC5
    for b in device_id.encode("utf-8"):
        h ^= b
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h % partitions


def iothub_sas(resource: str, key_b64: str, key_name: str = "service", ttl: int = 3600) -> str:
    expiry = int(time.time()) + ttl
    sr = urllib.parse.quote(resource, safe="")
    digest = hmac.new(base64.b64decode(key_b64), f"{sr}\n{expiry}".encode(), hashlib.sha256).digest()
    sig = urllib.parse.quote(base64.b64encode(digest).decode(), safe="")
    return f"SharedAccessSignature sr={sr}&sig={sig}&se={expiry}&skn={key_name}"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    cmd = os.environ.get("EMULATOR_CMD")
    if not cmd:
        pytest.fail("EMULATOR_CMD is not set (use tests/python/run.sh)")
    log = open(tmp_path_factory.mktemp("emu") / "emulator.log", "w")
    args = shlex.split(cmd) + [
        "--hub-name", HUB,
        "--partitions", "4",
        "--amqp-listen", "127.0.0.1:0",
        "--http-listen", "127.0.0.1:0",
        "--consumer-groups", "pygroup",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        assert ready, "the emulator printed no connection info within 120 s"
        line = proc.stdout.readline()
        info = json.loads(line)
        yield info
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def post_event(info, device, body: bytes, headers=None):
    url = f"{info['httpEndpoint']}/devices/{urllib.parse.quote(device)}/messages/events?api-version=2020-03-13"
    h = {"Authorization": iothub_sas(f"{info['iotHubHostName']}/devices/{device}", info["accessKeyValue"])}
    h.update(headers or {})
    req = urllib.request.Request(url, data=body, headers=h, method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 204


def conn_str(info):
    return info["eventHubConnectionString"] + ";UseDevelopmentEmulator=true"


def body_bytes(ev) -> bytes:
    b = ev.body
    if isinstance(b, (bytes, bytearray)):
        return bytes(b)
    return b"".join(b)


def read(info, partition, starting_position, inclusive, n, group="$Default"):
    got = []
    done = threading.Event()

    def on_event(_ctx, ev):
        if ev is None:
            return
        got.append(ev)
        if len(got) >= n:
            done.set()

    client = EventHubConsumerClient.from_connection_string(conn_str(info), consumer_group=group)
    t = threading.Thread(
        target=client.receive,
        kwargs=dict(
            on_event=on_event,
            partition_id=str(partition),
            starting_position=starting_position,
            starting_position_inclusive=inclusive,
        ),
        daemon=True,
    )
    t.start()
    ok = done.wait(60)
    client.close()
    t.join(30)
    assert ok, f"received {len(got)} of {n} events"
    return got[:n]


@pytest.fixture(scope="module")
def sent(emulator):
    post_event(emulator, DEVICE, bytes([0, 159, 146, 150, 255]), {"Content-Type": "application/octet-stream"})
    post_event(
        emulator,
        DEVICE,
        b'{"t":21.5}',
        {
            "iothub-messageid": "m-1",
            "iothub-correlationid": "c-1",
            "iothub-contenttype": "application/json",
            "iothub-contentencoding": "utf-8",
            "iothub-app-color": "blue",
        },
    )
    for i in range(2, 5):
        time.sleep(0.005)  # distinct millisecond enqueued times
        post_event(emulator, DEVICE, f"event-{i}".encode())
    return fnv1a_partition(DEVICE, 4)


def test_management(emulator, sent):
    client = EventHubConsumerClient.from_connection_string(conn_str(emulator), consumer_group="$Default")
    try:
        assert client.get_partition_ids() == ["0", "1", "2", "3"]
        eh = client.get_eventhub_properties()
        assert eh["eventhub_name"] == HUB
        assert eh["partition_ids"] == ["0", "1", "2", "3"]
        p = client.get_partition_properties(str(sent))
        assert p["id"] == str(sent)
        assert p["beginning_sequence_number"] == 0
        assert p["last_enqueued_sequence_number"] == 4
        assert p["is_empty"] is False
        assert isinstance(p["last_enqueued_offset"], str)
    finally:
        client.close()


def test_earliest_with_annotations_and_properties(emulator, sent):
    evs = read(emulator, sent, "-1", False, 5)
    assert [e.sequence_number for e in evs] == [0, 1, 2, 3, 4]
    assert body_bytes(evs[0]) == bytes([0, 159, 146, 150, 255])
    assert body_bytes(evs[1]) == b'{"t":21.5}'
    offsets = [int(e.offset) for e in evs]
    assert offsets == sorted(offsets) and len(set(offsets)) == 5
    for e in evs:
        sp = e.system_properties
        assert sp[b"iothub-connection-device-id"] == DEVICE.encode()
        assert sp[b"iothub-message-source"] == b"Telemetry"
        auth = json.loads(sp[b"iothub-connection-auth-method"])
        assert auth["scope"] == "device" and auth["type"] == "sas"
        assert b"iothub-enqueuedtime" in sp
        assert b"iothub-connection-auth-generation-id" in sp
        assert isinstance(e.enqueued_time, datetime.datetime)
    e1 = evs[1]
    assert e1.properties[b"color"] == b"blue"
    sp = e1.system_properties
    assert sp[b"message-id"] == b"m-1"
    assert sp[b"correlation-id"] == b"c-1"
    assert sp[b"content-type"] == b"application/json"
    assert sp[b"content-encoding"] == b"utf-8"


def test_start_positions(emulator, sent):
    evs = read(emulator, sent, "-1", False, 5)
    off1 = evs[1].offset
    assert [e.sequence_number for e in read(emulator, sent, off1, False, 3)] == [2, 3, 4]
    assert [e.sequence_number for e in read(emulator, sent, off1, True, 4)] == [1, 2, 3, 4]
    assert [e.sequence_number for e in read(emulator, sent, 2, False, 2)] == [3, 4]
    assert [e.sequence_number for e in read(emulator, sent, 2, True, 3)] == [2, 3, 4]
    t3 = evs[3].enqueued_time
    assert [e.sequence_number for e in read(emulator, sent, t3, False, 1)] == [4]
    # Another consumer group sees the same events.
    assert [e.sequence_number for e in read(emulator, sent, "-1", False, 5, group="pygroup")] == [0, 1, 2, 3, 4]


def attached_receivers(info) -> int:
    with urllib.request.urlopen(f"{info['httpEndpoint']}/emulator/stats", timeout=10) as r:
        return json.loads(r.read())["partitionReceiversAttached"]


def test_latest_sees_only_new_events(emulator, sent):
    got = []
    done = threading.Event()

    def on_event(_ctx, ev):
        if ev is not None:
            got.append(ev)
            done.set()

    before = attached_receivers(emulator)
    client = EventHubConsumerClient.from_connection_string(conn_str(emulator), consumer_group="$Default")
    t = threading.Thread(
        target=client.receive,
        kwargs=dict(on_event=on_event, partition_id=str(sent), starting_position="@latest"),
        daemon=True,
    )
    t.start()
    # '@latest' is resolved when the link attaches: send only once the emulator has accepted it.
    deadline = time.time() + 60
    while attached_receivers(emulator) <= before:
        assert time.time() < deadline, "receiver never attached"
        time.sleep(0.05)
    post_event(emulator, DEVICE, b"late")
    ok = done.wait(60)
    client.close()
    t.join(30)
    assert ok
    assert body_bytes(got[0]) == b"late"
    assert got[0].sequence_number == 5


def test_wrong_key_is_refused(emulator, sent):
    bad = conn_str(emulator).replace(emulator["accessKeyValue"], base64.b64encode(b"not-the-key-0123456789").decode())
    client = EventHubConsumerClient.from_connection_string(bad, consumer_group="$Default", retry_total=0)
    try:
        with pytest.raises(Exception) as exc:
            client.get_partition_ids()
        text = repr(exc.value).lower()
        assert "auth" in text or "401" in text, text
    finally:
        client.close()

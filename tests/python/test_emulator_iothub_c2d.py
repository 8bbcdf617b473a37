"""Microsoft's Python IoT Hub service client (azure-iot-hub, uamqp) sending C2D to the emulator.

Findings that shape this test:
* azure-iot-hub 2.7.0 (uamqp 1.6.11) only speaks amqps, and it dials port 5671 whatever the
  connection string's HostName says (``JWTTokenAuth`` is built from ``https://<HostName>`` without
  a port, and uamqp then defaults to 5671). So the emulator's TLS listener must be on
  127.0.0.1:5671; the test is skipped when that port is taken.
* uamqp verifies the server against ``certifi.where()`` unless given ``verify``, which
  azure-iot-hub does not expose; the sending subprocess points ``certifi.where`` at the test CA
  (made with the openssl CLI) before importing the client: the equivalent of installing the CA.
* azure-iot-hub 2.7.0 imports ``six`` without declaring it (requirements-iothub.txt lists it).
Skipped when azure-iot-hub is not installed (optional: tests/python/requirements-iothub.txt).
"""

import json
import os
import socket
import select
import shlex
import subprocess
import sys
import textwrap
import urllib.request

import pytest

pytest.importorskip("azure.iot.hub")


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def tls_emulator(tmp_path_factory):
    cmd = os.environ.get("EMULATOR_CMD")
    if not cmd:
        pytest.fail("EMULATOR_CMD is not set (use tests/python/run.sh)")
    probe = socket.socket()
    try:
        probe.bind(("127.0.0.1", 5671))
    except OSError:
        pytest.skip("127.0.0.1:5671 is in use; azure-iot-hub can only dial 5671")
    finally:
        probe.close()
    d = tmp_path_factory.mktemp("tls")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=iotconnect test CA",
            "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key",
            "-out", "server.csr", cwd=d)
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "ext.cnf", "-out", "server.pem", cwd=d)
    log = open(d / "emulator.log", "w")
    args = shlex.split(cmd) + [
        "--amqp-listen", "127.0.0.1:5671",
        "--http-listen", "127.0.0.1:0",
        "--tls-cert", str(d / "server.pem"),
        "--tls-key", str(d / "server.key"),
        "--devices", "dev-1",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        assert ready, "the emulator printed no connection info within 120 s"
        info = json.loads(proc.stdout.readline())
        yield info, d / "ca.pem"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


SEND = textwrap.dedent(
    """
    import sys
    import certifi
    certifi.where = lambda: sys.argv[3]
    from azure.iot.hub import IoTHubRegistryManager
    rm = IoTHubRegistryManager.from_connection_string(sys.argv[1])
    rm.send_c2d_message(sys.argv[2], "hello from azure-iot-hub", properties={"k": "v"})
    print("sent")
    """
)


def send(info, ca, device):
    return subprocess.run(
        [sys.executable, "-c", SEND, info["serviceConnectionString"], device, str(ca)],
        capture_output=True, text=True, timeout=120,
    )


def c2d_messages(info):
    """GET /emulator/c2d: it shows message bodies, so it needs a hub-level token when auth is on."""
    req = urllib.request.Request(
        f"{info['httpEndpoint']}/emulator/c2d", headers={"Authorization": info["deviceSasToken"]}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def test_azure_iot_hub_sends_c2d_over_tls(tls_emulator):
    info, ca = tls_emulator
    assert info["amqpEndpoint"].startswith("amqps://")
    r = send(info, ca, "dev-1")
    assert r.returncode == 0, r.stdout + r.stderr
    msgs = c2d_messages(info)
    assert len(msgs) == 1
    assert msgs[0]["deviceId"] == "dev-1"
    assert msgs[0]["body"] == "hello from azure-iot-hub"
    assert ["k", "v"] in msgs[0]["properties"]


def test_azure_iot_hub_unknown_device_is_rejected(tls_emulator):
    info, ca = tls_emulator
    r = send(info, ca, "ghost")
    # azure-iot-hub reports any rejected send as a bare "C2D message send failure" (the AMQP condition
    # amqp:not-found is not surfaced); the emulator's counters show why.
    assert r.returncode != 0
    assert "C2D message send failure" in r.stderr, r.stderr[-2000:]
    with urllib.request.urlopen(f"{info['httpEndpoint']}/emulator/stats", timeout=10) as resp:
        stats = json.loads(resp.read())
    assert stats["c2dRefused"] == 1
    assert all(m["deviceId"] != "ghost" for m in c2d_messages(info))

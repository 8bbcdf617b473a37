//! Any Event Hub, not only IoT Hub's built-in endpoint (issue 13.2): events sent by Microsoft's
//! Python `EventHubProducerClient` (as a routed custom endpoint or Azure Digital Twins would store
//! them: no `iothub-*` annotations, CloudEvents application properties) through the emulator, read by
//! `iotconnect standalone` into a real broker, in the Struct and the raw format.

use crate::source_support;
use crate::support;

use source_support::*;
use std::collections::HashMap;
use std::process::Command;
use support::*;

/// The Python of the test virtualenv (scripts/python-env.sh creates it on first use).
fn python() -> String {
    let out = Command::new(format!("{REPO}/scripts/python-env.sh"))
        .output()
        .expect("run scripts/python-env.sh");
    assert!(
        out.status.success(),
        "python-env.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Sends the events with azure-eventhub's EventHubProducerClient; each spec is
/// `{"body", "props", "content_type"?, "partition"?}` (no partition: to the entity).
const SEND: &str = r#"
import json, sys
from azure.eventhub import EventData, EventHubProducerClient
producer = EventHubProducerClient.from_connection_string(sys.argv[1])
with producer:
    for spec in json.loads(sys.argv[2]):
        kw = {"partition_id": spec["partition"]} if spec.get("partition") is not None else {}
        batch = producer.create_batch(**kw)
        e = EventData(spec["body"])
        e.properties = spec["props"]
        if spec.get("content_type"):
            e.content_type = spec["content_type"]
        batch.add(e)
        producer.send_batch(batch)
"#;

fn cloud_event(id: &str) -> serde_json::Value {
    serde_json::json!({
        "cloudEvents:id": id,
        "cloudEvents:source": "myadt.api.weu.digitaltwins.azure.net/digitaltwins/room1",
        "cloudEvents:specversion": "1.0",
        "cloudEvents:type": "Microsoft.DigitalTwins.Twin.Update",
        "cloudEvents:time": "2026-11-29T10:00:00.0000000Z",
        "cloudEvents:subject": "room1",
    })
}

fn send_with_python(hub: &Hub) {
    let conn = format!(
        "{};UseDevelopmentEmulator=true",
        hub.emu().info().event_hub_connection_string.expose()
    );
    let specs = serde_json::json!([
        {"body": "{\"patch\":[{\"op\":\"replace\",\"path\":\"/t\",\"value\":21}]}",
         "props": cloud_event("ce-1"), "content_type": "application/json"},
        {"body": "{\"routed\":true}", "props": cloud_event("ce-2"), "partition": "1"},
    ]);
    let out = Command::new(python())
        .args(["-c", SEND, &conn, &specs.to_string()])
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "EventHubProducerClient failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn struct_records_of_plain_event_hub_events_carry_cloud_events_properties() {
    let hub = Hub::start(2);
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("src-eh-struct");
    create_topic(&broker().bootstrap, &topic, 1);
    send_with_python(&hub);
    let w = worker_file(
        dir.path(),
        STRING,
        JSON,
        "value.converter.schemas.enable=false\n",
    );
    let c = source_file(
        dir.path(),
        "src",
        &topic,
        &hub,
        "Kafka.RecordKey=deviceId\n",
    );
    let mut p = start(&w, &c);
    let recs = read_topic(&broker().bootstrap, &topic, 2, T);
    wait_all_committed(dir.path(), "src", &hub);
    assert_eq!(p.terminate(T), Some(0), "{}", p.log());
    let mut by_id = HashMap::new();
    for r in &recs {
        assert_eq!(
            r.key, None,
            "no device id: null key, also with Kafka.RecordKey=deviceId"
        );
        let v = json(r.value.as_deref().unwrap());
        by_id.insert(
            v["properties"]["cloudEvents:id"]
                .as_str()
                .unwrap()
                .to_string(),
            v,
        );
    }
    let v = &by_id["ce-1"];
    assert_eq!(v["deviceId"], "");
    assert_eq!(
        v["contentType"], "",
        "toketi's contentType is the application property"
    );
    assert_eq!(v["systemProperties"]["content-type"], "application/json");
    assert!(v["systemProperties"]
        .as_object()
        .unwrap()
        .keys()
        .all(|k| !k.starts_with("iothub-")));
    assert_eq!(
        v["properties"]["cloudEvents:type"],
        "Microsoft.DigitalTwins.Twin.Update"
    );
    assert_eq!(v["properties"]["cloudEvents:specversion"], "1.0");
    assert!(v["content"].as_str().unwrap().contains("\"patch\""));
    assert!(!v["offset"].as_str().unwrap().is_empty());
    assert!(v["sequenceNumber"].as_i64().unwrap() >= 0);
    assert_eq!(by_id["ce-2"]["content"], "{\"routed\":true}");
}

#[test]
fn raw_records_of_plain_event_hub_events_carry_cloud_events_headers() {
    let hub = Hub::start(2);
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("src-eh-raw");
    create_topic(&broker().bootstrap, &topic, 1);
    send_with_python(&hub);
    let w = worker_file(dir.path(), JSON, JSON, "");
    let c = source_file(dir.path(), "src", &topic, &hub, "Kafka.RecordFormat=raw\n");
    let mut p = start(&w, &c);
    let recs = read_topic(&broker().bootstrap, &topic, 2, T);
    wait_all_committed(dir.path(), "src", &hub);
    assert_eq!(p.terminate(T), Some(0), "{}", p.log());
    let mut ids = Vec::new();
    for r in &recs {
        assert_eq!(r.key, None, "no device id: null key");
        let h: HashMap<&str, &[u8]> = r
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref().unwrap_or_default()))
            .collect();
        assert!(!h.contains_key("iothub-connection-device-id"));
        assert_eq!(h["cloudEvents:type"], b"Microsoft.DigitalTwins.Twin.Update");
        assert_eq!(h["cloudEvents:specversion"], b"1.0");
        assert!(h.contains_key("x-opt-offset") && h.contains_key("x-opt-sequence-number"));
        assert!(r.timestamp.is_some(), "enqueued time as timestamp");
        ids.push(String::from_utf8(h["cloudEvents:id"].to_vec()).unwrap());
    }
    ids.sort();
    assert_eq!(ids, vec!["ce-1", "ce-2"]);
}

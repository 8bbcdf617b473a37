//! The IoT Hub source end to end (emulator → `iotconnect standalone` → real broker): the bytes on the
//! topic for each converter setting, the raw format, binary/unicode/empty bodies, plain Event Hub
//! events, and per-partition order with many devices on 4 partitions.

use crate::source_support;
use crate::support;

use iotconnect_emulator::{PropValue, TelemetryProps};
use source_support::*;
use std::collections::{HashMap, HashSet};
use support::*;

/// The `iothub.kafka.connect` v1 schema as JsonConverter writes it (kafka-connect.md §7.1).
const SCHEMA: &str = r#"{"type":"struct","fields":[{"type":"string","optional":false,"field":"deviceId"},{"type":"string","optional":false,"field":"offset"},{"type":"string","optional":true,"field":"contentType"},{"type":"string","optional":false,"field":"enqueuedTime"},{"type":"int64","optional":false,"field":"sequenceNumber"},{"type":"string","optional":false,"field":"content"},{"type":"map","keys":{"type":"string","optional":false},"values":{"type":"string","optional":false},"optional":false,"field":"systemProperties"},{"type":"map","keys":{"type":"string","optional":false},"values":{"type":"string","optional":false},"optional":false,"field":"properties"}],"optional":false,"name":"iothub.kafka.connect","version":1}"#;

fn props() -> TelemetryProps {
    TelemetryProps {
        message_id: Some("m-1".into()),
        correlation_id: None,
        content_type: None,
        content_encoding: None,
        app: vec![
            ("temperatureAlert".into(), PropValue::String("false".into())),
            (
                "contentType".into(),
                PropValue::String("application/json".into()),
            ),
        ],
    }
}

fn is_instant(s: &str) -> bool {
    let re = regex::Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z$").unwrap();
    re.is_match(s)
}

/// Splits `…,"systemProperties":{…},"properties":{…}}}` (JsonConverter with schemas: payload and
/// envelope close at the end) into (head, systemProperties, properties), the two maps parsed (their
/// order is a Java HashMap's, so they are compared as maps).
fn split_maps(s: &str) -> (String, serde_json::Value, serde_json::Value) {
    let i = s.find(r#","systemProperties":"#).expect("systemProperties");
    let tail = s[i + 1..].strip_suffix('}').expect("envelope end");
    let obj: serde_json::Value = serde_json::from_str(&format!("{{{tail}")).unwrap();
    (
        s[..i].to_string(),
        obj["systemProperties"].clone(),
        obj["properties"].clone(),
    )
}

fn expected_system_properties(device: &str) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert(
        "iothub-connection-auth-method".into(),
        r#"{"scope":"device","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}"#.into(),
    );
    m.insert("iothub-message-source".into(), "Telemetry".into());
    m.insert("message-id".into(), "m-1".into());
    let _ = device;
    m
}

#[test]
fn json_converter_with_schemas_writes_connects_bytes() {
    let hub = Hub::start(2);
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("src-json");
    create_topic(&broker().bootstrap, &topic, 1);
    let body = "{\"temp\":21.5,\"note\":\"ü \\\"q\\\" \u{1F511}\"}\n";
    let sent = hub.send("dev-json", body.as_bytes(), Some(props()));
    let w = worker_file(dir.path(), JSON, JSON, "");
    let c = source_file(dir.path(), "src", &topic, &hub, "");
    let mut p = start(&w, &c);
    let recs = read_topic(&broker().bootstrap, &topic, 1, T);
    p.terminate(T);
    let r = &recs[0];
    assert_eq!(r.key, None, "null key, as toketi");
    assert!(r.headers.is_empty());
    let s = String::from_utf8(r.value.clone().unwrap()).unwrap();
    let (head, sys, app) = split_maps(&s);
    let prefix = format!(
        r#"{{"schema":{SCHEMA},"payload":{{"deviceId":"dev-json","offset":"{}","contentType":"application/json","enqueuedTime":""#,
        sent.offset
    );
    assert!(head.starts_with(&prefix), "{head}\n---\n{prefix}");
    let rest = &head[prefix.len()..];
    let (instant, rest) = rest.split_once('"').unwrap();
    assert!(is_instant(instant), "{instant}");
    // Jackson escapes: quotes, backslash, control chars; non-ASCII raw; non-BMP as surrogate pair.
    assert_eq!(
        rest,
        format!(
            r#","sequenceNumber":{},"content":"{{\"temp\":21.5,\"note\":\"ü \\\"q\\\" \uD83D\uDD11\"}}\n""#,
            sent.sequence_number
        )
    );
    let sys = sys.as_object().unwrap();
    for (k, v) in expected_system_properties("dev-json") {
        assert_eq!(sys.get(&k), Some(&v), "systemProperties[{k}] in {s}");
    }
    assert!(sys.contains_key("iothub-connection-auth-generation-id"));
    let enq = sys["iothub-enqueuedtime"].as_str().unwrap();
    assert!(enq.ends_with(" UTC 20") || enq.contains(" UTC "), "{enq}");
    for promoted in [
        "iothub-connection-device-id",
        "x-opt-offset",
        "x-opt-sequence-number",
        "x-opt-enqueued-time",
    ] {
        assert!(!sys.contains_key(promoted), "{promoted} must be removed");
    }
    assert_eq!(app, serde_json::json!({"temperatureAlert": "false"}));
}

#[test]
fn string_converter_writes_struct_to_string_and_device_id_keys() {
    let hub = Hub::start(1);
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("src-string");
    create_topic(&broker().bootstrap, &topic, 1);
    let sent = hub.send(
        "dev-s",
        b"{\"messageId\":1,\"temperature\":25.5}",
        Some(TelemetryProps {
            app: vec![("temperatureAlert".into(), PropValue::String("false".into()))],
            ..Default::default()
        }),
    );
    let w = worker_file(dir.path(), STRING, STRING, "");
    let c = source_file(
        dir.path(),
        "src",
        &topic,
        &hub,
        "Kafka.RecordKey=deviceId\n",
    );
    let mut p = start(&w, &c);
    let recs = read_topic(&broker().bootstrap, &topic, 1, T);
    p.terminate(T);
    let r = &recs[0];
    assert_eq!(r.key.as_deref(), Some(&b"dev-s"[..]));
    let s = String::from_utf8(r.value.clone().unwrap()).unwrap();
    let prefix = format!(
        "Struct{{deviceId=dev-s,offset={},contentType=,enqueuedTime=",
        sent.offset
    );
    assert!(s.starts_with(&prefix), "{s}");
    let rest = &s[prefix.len()..];
    let (instant, rest) = rest.split_once(',').unwrap();
    assert!(is_instant(instant), "{instant}");
    let expected_mid = format!(
        "sequenceNumber={},content={{\"messageId\":1,\"temperature\":25.5}},systemProperties={{",
        sent.sequence_number
    );
    assert!(rest.starts_with(&expected_mid), "{rest}");
    assert!(
        rest.ends_with("},properties={temperatureAlert=false}}"),
        "{rest}"
    );
    assert!(rest.contains("iothub-message-source=Telemetry"), "{rest}");
    assert!(
        rest.contains(", "),
        "Map.toString separates entries with \", \": {rest}"
    );
}

#[test]
fn json_without_schemas_with_json_device_id_key() {
    let hub = Hub::start(1);
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("src-noschema");
    create_topic(&broker().bootstrap, &topic, 1);
    let sent = hub.send("dev-n", b"", None);
    let w = worker_file(
        dir.path(),
        JSON,
        JSON,
        "key.converter.schemas.enable=false\nvalue.converter.schemas.enable=false\n",
    );
    let c = source_file(
        dir.path(),
        "src",
        &topic,
        &hub,
        "Kafka.RecordKey=deviceId\n",
    );
    let mut p = start(&w, &c);
    let recs = read_topic(&broker().bootstrap, &topic, 1, T);
    p.terminate(T);
    let r = &recs[0];
    assert_eq!(r.key.as_deref(), Some(&b"\"dev-n\""[..]));
    let s = String::from_utf8(r.value.clone().unwrap()).unwrap();
    let prefix = format!(
        r#"{{"deviceId":"dev-n","offset":"{}","contentType":"","enqueuedTime":""#,
        sent.offset
    );
    assert!(s.starts_with(&prefix), "{s}");
    assert!(
        s.contains(&format!(
            r#","sequenceNumber":{},"content":"","systemProperties":{{"#,
            sent.sequence_number
        )),
        "empty body → empty content: {s}"
    );
    assert!(s.ends_with(r#","properties":{}}"#), "{s}");
}

#[test]
fn raw_format_keeps_bodies_byte_for_byte_with_headers_and_timestamp() {
    let hub = Hub::start(1);
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("src-raw");
    create_topic(&broker().bootstrap, &topic, 1);
    let bodies: Vec<Vec<u8>> = vec![
        vec![0, 159, 146, 150, 255, 0xC3, 0x28], // not UTF-8
        "unicode ✓ 🔑 \u{0}".as_bytes().to_vec(),
        Vec::new(),
    ];
    let mut sent = Vec::new();
    for b in &bodies {
        sent.push(hub.send(
            "dev-raw",
            b,
            Some(TelemetryProps {
                app: vec![("unit".into(), PropValue::String("C".into()))],
                ..Default::default()
            }),
        ));
    }
    let w = worker_file(dir.path(), JSON, JSON, "");
    let c = source_file(dir.path(), "src", &topic, &hub, "Kafka.RecordFormat=raw\n");
    let mut p = start(&w, &c);
    let recs = read_topic(&broker().bootstrap, &topic, 3, T);
    p.terminate(T);
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(
            r.value.as_deref().unwrap_or_default(),
            &bodies[i][..],
            "body {i}"
        );
        assert_eq!(r.key.as_deref(), Some(&b"dev-raw"[..]));
        let h: HashMap<&str, &[u8]> = r
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref().unwrap_or_default()))
            .collect();
        assert_eq!(h["x-opt-offset"], sent[i].offset.as_bytes());
        assert_eq!(
            h["x-opt-sequence-number"],
            sent[i].sequence_number.to_string().as_bytes()
        );
        assert_eq!(h["iothub-connection-device-id"], b"dev-raw");
        assert_eq!(h["unit"], b"C");
        assert_eq!(h["iothub-message-source"], b"Telemetry");
        let ts = r.timestamp.expect("enqueued time as timestamp");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        assert!(
            (now - ts).abs() < 600_000,
            "timestamp {ts} is the enqueued time"
        );
    }
}

#[test]
fn binary_body_with_the_struct_format_uses_the_replacement_character() {
    let hub = Hub::start(1);
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("src-bin");
    create_topic(&broker().bootstrap, &topic, 1);
    hub.send("dev-b", &[b'a', 0xFF, b'b'], None);
    let w = worker_file(
        dir.path(),
        JSON,
        JSON,
        "value.converter.schemas.enable=false\n",
    );
    let c = source_file(dir.path(), "src", &topic, &hub, "");
    let mut p = start(&w, &c);
    let recs = read_topic(&broker().bootstrap, &topic, 1, T);
    p.terminate(T);
    let v = json(recs[0].value.as_deref().unwrap());
    assert_eq!(v["content"], "a\u{FFFD}b");
}

#[test]
fn plain_event_hub_events_have_an_empty_device_id() {
    let hub = Hub::start(2);
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("src-plain");
    create_topic(&broker().bootstrap, &topic, 1);
    let sent = hub
        .emu()
        .send_event(1, b"twin-change".to_vec(), None)
        .unwrap();
    let w = worker_file(
        dir.path(),
        JSON,
        JSON,
        "value.converter.schemas.enable=false\n",
    );
    let c = source_file(dir.path(), "src", &topic, &hub, "");
    let mut p = start(&w, &c);
    let recs = read_topic(&broker().bootstrap, &topic, 1, T);
    p.terminate(T);
    let v = json(recs[0].value.as_deref().unwrap());
    assert_eq!(v["deviceId"], "");
    assert_eq!(v["offset"], sent.offset.as_str());
    assert_eq!(v["content"], "twin-change");
    assert_eq!(v["systemProperties"], serde_json::json!({}));
}

#[test]
fn many_devices_on_four_partitions_keep_per_partition_order() {
    let hub = Hub::start(4);
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("src-order");
    create_topic(&broker().bootstrap, &topic, 3);
    let devices = 40;
    let per = 25;
    let mut hub_partition: HashMap<String, u32> = HashMap::new();
    for i in 0..per {
        for d in 0..devices {
            let dev = format!("dev-{d}");
            let s = hub.send(&dev, format!("{{\"n\":{i}}}").as_bytes(), None);
            hub_partition.insert(dev, s.partition);
        }
    }
    let used: HashSet<u32> = hub_partition.values().copied().collect();
    assert_eq!(used.len(), 4, "the devices cover all 4 hub partitions");
    let total = devices * per;
    let w = worker_file(
        dir.path(),
        JSON,
        JSON,
        "value.converter.schemas.enable=false\n",
    );
    let c = source_file(dir.path(), "src", &topic, &hub, "tasks.max=2\n");
    let mut p = start(&w, &c);
    let recs = read_topic(&broker().bootstrap, &topic, total, T);
    p.wait_for_log("Committing offsets for", T);
    assert_eq!(p.terminate(T), Some(0), "{}", p.log());
    let mut seen = HashSet::new();
    // Within each Kafka partition, the records of one hub partition come in sequence order.
    let mut last: HashMap<(i32, u32), i64> = HashMap::new();
    for r in &recs {
        let (dev, seq) = id_seq(r);
        assert!(seen.insert((dev.clone(), seq)), "duplicate {dev} {seq}");
        let hp = hub_partition[&dev];
        if let Some(prev) = last.insert((r.partition, hp), seq) {
            assert!(
                seq > prev,
                "hub partition {hp} reordered in Kafka partition {}",
                r.partition
            );
        }
    }
    assert_eq!(seen.len(), total);
    let log = p.log();
    assert!(
        log.contains("Starting IotHubSourceTask for partitions 0,2"),
        "{log}"
    );
    assert!(
        log.contains("Starting IotHubSourceTask for partitions 1,3"),
        "{log}"
    );
    assert!(
        log.contains("Setting up partition receiver 3 with offset -1"),
        "{log}"
    );
}

#[test]
fn byte_array_value_converter_is_refused_at_start() {
    let hub = Hub::start(1);
    let dir = tempfile::tempdir().unwrap();
    let w = worker_file(
        dir.path(),
        STRING,
        "org.apache.kafka.connect.converters.ByteArrayConverter",
        "",
    );
    let c = source_file(dir.path(), "src", "t", &hub, "");
    let mut p = Process::spawn(
        &["standalone", w.to_str().unwrap(), c.to_str().unwrap()],
        &[],
    );
    assert_eq!(p.wait(T), Some(3), "{}", p.log());
    assert!(
        p.log()
            .contains("Invalid schema type for ByteArrayConverter: STRUCT"),
        "{}",
        p.log()
    );
}

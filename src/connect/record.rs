//! The record value the toketi IoT Hub source connector emits: the Connect `Struct`
//! `iothub.kafka.connect` version 1 with 8 fields (toketi.md §2.9), built from a library-neutral
//! description of one received Event Hubs event.
//!
//! Decisions where toketi would crash or is undefined (documented for the README):
//! * `content`: the body decoded as UTF-8, lossless when valid; malformed bytes become U+FFFD
//!   exactly as the JDK's UTF-8 decoder (the usual platform charset) replaces them. Binary payloads
//!   are therefore corrupted exactly as with the Java connector: use the raw record format.
//! * Values of `systemProperties` and `properties` are rendered with Java `toString()` rules
//!   ([`render_scalar`]). toketi copies application properties as-is, so any non-string one makes
//!   the Java task fail with a `DataException`; we stringify instead.
//! * A property or annotation whose value is AMQP null is left out of the maps (Java would throw a
//!   `NullPointerException`).
//! * The four promoted annotations are removed from `systemProperties` whatever their type;
//!   `sequenceNumber` takes any integer type and is 0 for anything else; `enqueuedTime` renders a
//!   timestamp as `Instant.toString()` and any other type with [`render_scalar`].

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, OnceLock};

use super::java;
use super::schema::{Schema, Type};
use super::value::{Struct, Value};

pub const SCHEMA_NAME: &str = "iothub.kafka.connect";
pub const SCHEMA_VERSION: i32 = 1;

/// Annotation holding the device id.
pub const DEVICE_ID_KEY: &str = "iothub-connection-device-id";
/// Annotation holding the Event Hubs offset.
pub const OFFSET_KEY: &str = "x-opt-offset";
/// Annotation holding the enqueued time (AMQP timestamp).
pub const ENQUEUED_TIME_KEY: &str = "x-opt-enqueued-time";
/// Annotation holding the sequence number.
pub const SEQUENCE_NUMBER_KEY: &str = "x-opt-sequence-number";
/// Application property promoted to the `contentType` field.
pub const CONTENT_TYPE_KEY: &str = "contentType";

/// Source partition / offset map keys toketi ≥ 0.6 uses.
pub const PARTITION_EVENT_HUB_NAME: &str = "EventHubName";
pub const PARTITION_EVENT_HUB_PARTITION: &str = "EventHubPartition";
pub const OFFSET_EVENT_HUB_OFFSET: &str = "EventHubOffset";

/// The AMQP `properties` section fields the Event Hubs SDK copies into the system properties, in
/// section order, under these names.
pub const AMQP_PROPERTY_NAMES: [&str; 13] = [
    "message-id",
    "user-id",
    "to",
    "subject",
    "reply-to",
    "correlation-id",
    "content-type",
    "content-encoding",
    "absolute-expiry-time",
    "creation-time",
    "group-id",
    "group-sequence",
    "reply-to-group-id",
];

/// An AMQP simple value as it appears in annotations, properties and application properties.
#[derive(Clone, Debug, PartialEq)]
pub enum AmqpScalar {
    Null,
    Bool(bool),
    UByte(u8),
    UShort(u16),
    UInt(u32),
    ULong(u64),
    Byte(i8),
    Short(i16),
    Int(i32),
    Long(i64),
    Float(f32),
    Double(f64),
    Char(char),
    /// AMQP timestamp: milliseconds since the Unix epoch.
    Timestamp(i64),
    Uuid([u8; 16]),
    Binary(Vec<u8>),
    String(String),
    Symbol(String),
}

/// One received event, independent of the AMQP library that delivered it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IotEvent {
    /// Message annotations in message order (`x-opt-offset`, `iothub-connection-device-id`, …).
    pub annotations: Vec<(String, AmqpScalar)>,
    /// The AMQP properties section fields that are present, keyed by the names in
    /// [`AMQP_PROPERTY_NAMES`].
    pub properties: Vec<(String, AmqpScalar)>,
    /// Application properties in message order.
    pub application_properties: Vec<(String, AmqpScalar)>,
    /// The body (the `Data` section bytes).
    pub body: Vec<u8>,
}

/// Java `toString()` of an AMQP value as the Java connector would render it: numbers in decimal
/// (`Float/Double.toString` for floating point), timestamps as `java.util.Date.toString()` in UTC
/// (`Tue Aug 29 20:15:46 UTC 2017`), UUIDs lower-case hyphenated, binary as proton-j's
/// `Binary.toString()` (printable ASCII kept, other bytes and `\` as `\xNN`). `None` for null.
pub fn render_scalar(v: &AmqpScalar) -> Option<String> {
    Some(match v {
        AmqpScalar::Null => return None,
        AmqpScalar::Bool(b) => b.to_string(),
        AmqpScalar::UByte(x) => x.to_string(),
        AmqpScalar::UShort(x) => x.to_string(),
        AmqpScalar::UInt(x) => x.to_string(),
        AmqpScalar::ULong(x) => x.to_string(),
        AmqpScalar::Byte(x) => x.to_string(),
        AmqpScalar::Short(x) => x.to_string(),
        AmqpScalar::Int(x) => x.to_string(),
        AmqpScalar::Long(x) => x.to_string(),
        AmqpScalar::Float(x) => java::float_to_string(*x),
        AmqpScalar::Double(x) => java::double_to_string(*x),
        AmqpScalar::Char(c) => c.to_string(),
        AmqpScalar::Timestamp(ms) => java::date_to_string(*ms),
        AmqpScalar::Uuid(u) => java::uuid_to_string(u),
        AmqpScalar::Binary(b) => java::binary_to_string(b),
        AmqpScalar::String(s) | AmqpScalar::Symbol(s) => s.clone(),
    })
}

/// The value schema of every toketi record (shared, built once).
pub fn iothub_value_schema() -> Arc<Schema> {
    static SCHEMA: OnceLock<Arc<Schema>> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let string_map = Arc::new(Schema::map(
                Schema::of(Type::String),
                Schema::of(Type::String),
            ));
            Arc::new(
                Schema::new(Type::Struct)
                    .name(SCHEMA_NAME)
                    .version(SCHEMA_VERSION)
                    .field("deviceId", Schema::of(Type::String))
                    .field("offset", Schema::of(Type::String))
                    .field("contentType", Schema::optional_of(Type::String))
                    .field("enqueuedTime", Schema::of(Type::String))
                    .field("sequenceNumber", Schema::of(Type::Int64))
                    .field("content", Schema::of(Type::String))
                    .field("systemProperties", string_map.clone())
                    .field("properties", string_map),
            )
        })
        .clone()
}

/// An insertion-ordered map with Java `LinkedHashMap` `put`/`remove` semantics: a repeated key
/// keeps its place and takes the last value; a removed key put again goes to the end. Small maps
/// are scanned; past [`LinkedMap::SCAN`] entries a hash index keeps every operation O(1), so an
/// event with tens of thousands of properties costs linear time.
struct LinkedMap<K, V> {
    entries: Vec<Option<(K, V)>>,
    index: Option<HashMap<K, usize>>,
}

impl<K: Eq + Hash + Clone, V> LinkedMap<K, V> {
    const SCAN: usize = 16;

    fn with_capacity(n: usize) -> Self {
        LinkedMap {
            entries: Vec::with_capacity(n),
            index: None,
        }
    }

    fn find(&self, k: &K) -> Option<usize> {
        match &self.index {
            Some(ix) => ix.get(k).copied(),
            None => self
                .entries
                .iter()
                .position(|e| e.as_ref().is_some_and(|(ek, _)| ek == k)),
        }
    }

    fn put(&mut self, k: K, v: V) {
        if let Some(i) = self.find(&k) {
            if let Some(slot) = &mut self.entries[i] {
                slot.1 = v;
            }
            return;
        }
        if let Some(ix) = &mut self.index {
            ix.insert(k.clone(), self.entries.len());
        }
        self.entries.push(Some((k, v)));
        if self.index.is_none() && self.entries.len() > Self::SCAN {
            let mut ix = HashMap::with_capacity(self.entries.len() * 2);
            for (i, e) in self.entries.iter().enumerate() {
                if let Some((ek, _)) = e {
                    ix.insert(ek.clone(), i);
                }
            }
            self.index = Some(ix);
        }
    }

    fn remove(&mut self, k: &K) {
        if let Some(i) = self.find(k) {
            self.entries[i] = None;
            if let Some(ix) = &mut self.index {
                ix.remove(k);
            }
        }
    }

    fn into_vec(self) -> Vec<(K, V)> {
        self.entries.into_iter().flatten().collect()
    }
}

/// [`render_scalar`] of an owned value: strings and symbols are moved, not copied.
fn render_owned(v: AmqpScalar) -> Option<String> {
    match v {
        AmqpScalar::String(s) | AmqpScalar::Symbol(s) => Some(s),
        other => render_scalar(&other),
    }
}

/// The promoted fields of an event, before conversion into a `Struct`.
#[derive(Clone, Debug, PartialEq)]
pub struct IotRecordFields {
    pub device_id: String,
    pub offset: String,
    pub content_type: String,
    pub enqueued_time: String,
    /// `x-opt-enqueued-time` in epoch millis when it was a timestamp (for a Kafka timestamp in the
    /// raw format and for latency metrics).
    pub enqueued_time_ms: Option<i64>,
    pub sequence_number: i64,
    pub content: String,
    pub system_properties: Vec<(String, String)>,
    pub properties: Vec<(String, String)>,
}

/// Splits an event into toketi's fields (see the module documentation for the rules).
pub fn fields(ev: &IotEvent) -> IotRecordFields {
    into_fields(ev.clone())
}

/// [`fields`] of an event that is no longer needed: its strings and body move into the fields
/// (the source's per-event path; no copy of the body when it is valid UTF-8).
pub fn into_fields(ev: IotEvent) -> IotRecordFields {
    let mut device_id = None;
    let mut offset = None;
    let mut enqueued: Option<AmqpScalar> = None;
    let mut sequence: Option<AmqpScalar> = None;
    // Annotations first, then the properties section: later puts replace earlier ones, as the SDK
    // fills one HashMap in that order.
    let mut raw: LinkedMap<String, AmqpScalar> =
        LinkedMap::with_capacity(ev.annotations.len() + ev.properties.len());
    for (k, v) in ev.annotations.into_iter().chain(ev.properties) {
        raw.put(k, v);
    }
    let raw = raw.into_vec();
    let mut system_properties: Vec<(String, String)> = Vec::with_capacity(raw.len());
    for (k, v) in raw {
        match k.as_str() {
            DEVICE_ID_KEY => device_id = render_owned(v),
            OFFSET_KEY => offset = render_owned(v),
            ENQUEUED_TIME_KEY => enqueued = Some(v),
            SEQUENCE_NUMBER_KEY => sequence = Some(v),
            // Keys are unique here: a plain push is Java's put.
            _ => {
                if let Some(text) = render_owned(v) {
                    system_properties.push((k, text));
                }
            }
        }
    }
    let mut content_type = None;
    let mut properties: LinkedMap<String, String> =
        LinkedMap::with_capacity(ev.application_properties.len());
    for (k, v) in ev.application_properties {
        if k == CONTENT_TYPE_KEY {
            content_type = render_owned(v);
            continue;
        }
        match render_owned(v) {
            Some(text) => properties.put(k, text),
            None => properties.remove(&k),
        }
    }
    let (enqueued_time, enqueued_time_ms) = match enqueued {
        Some(AmqpScalar::Timestamp(ms)) => (java::instant_to_string(ms), Some(ms)),
        Some(other) => (render_owned(other).unwrap_or_default(), None),
        None => (String::new(), None),
    };
    let sequence_number = match sequence {
        Some(AmqpScalar::Long(x)) => x,
        Some(AmqpScalar::Int(x)) => i64::from(x),
        Some(AmqpScalar::Short(x)) => i64::from(x),
        Some(AmqpScalar::Byte(x)) => i64::from(x),
        Some(AmqpScalar::ULong(x)) => x as i64,
        Some(AmqpScalar::UInt(x)) => i64::from(x),
        Some(AmqpScalar::UShort(x)) => i64::from(x),
        Some(AmqpScalar::UByte(x)) => i64::from(x),
        _ => 0,
    };
    let content = match String::from_utf8(ev.body) {
        Ok(s) => s,
        Err(e) => java::decode_utf8_java(e.as_bytes()),
    };
    IotRecordFields {
        device_id: device_id.unwrap_or_default(),
        offset: offset.unwrap_or_default(),
        content_type: content_type.unwrap_or_default(),
        enqueued_time,
        enqueued_time_ms,
        sequence_number,
        content,
        system_properties,
        properties: properties.into_vec(),
    }
}

impl IotRecordFields {
    /// The `iothub.kafka.connect` struct.
    pub fn to_struct(&self) -> Struct {
        self.clone().into_struct()
    }

    /// The `iothub.kafka.connect` struct, moving the strings into it.
    pub fn into_struct(self) -> Struct {
        let map = |m: Vec<(String, String)>| {
            Value::Map(
                m.into_iter()
                    .map(|(k, v)| (Value::String(k), Value::String(v)))
                    .collect(),
            )
        };
        // In schema field order: deviceId, offset, contentType, enqueuedTime, sequenceNumber,
        // content, systemProperties, properties.
        Struct::from_values(
            iothub_value_schema(),
            vec![
                Value::String(self.device_id),
                Value::String(self.offset),
                Value::String(self.content_type),
                Value::String(self.enqueued_time),
                Value::Int64(self.sequence_number),
                Value::String(self.content),
                map(self.system_properties),
                map(self.properties),
            ],
        )
        .expect("toketi fields always match the iothub.kafka.connect schema")
    }
}

/// The toketi record value for one event.
pub fn to_struct(ev: &IotEvent) -> Struct {
    fields(ev).into_struct()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::convert::{Converter, JavaCharset};

    fn s(x: &str) -> AmqpScalar {
        AmqpScalar::String(x.to_string())
    }

    /// The verified toketi example of kafka-connect.md §7.1 / §7.3.
    fn fakepi() -> IotEvent {
        IotEvent {
            annotations: vec![
                ("iothub-connection-device-id".into(), s("fakepi")),
                (
                    "iothub-connection-auth-generation-id".into(),
                    s("636395973391234567"),
                ),
                (
                    "iothub-connection-auth-method".into(),
                    s(r#"{"scope":"device","type":"sas","issuer":"iothub"}"#),
                ),
                (
                    "iothub-enqueuedtime".into(),
                    AmqpScalar::Timestamp(1_504_037_746_112),
                ),
                ("x-opt-offset".into(), s("8589934592")),
                ("x-opt-sequence-number".into(), AmqpScalar::Long(17)),
                (
                    "x-opt-enqueued-time".into(),
                    AmqpScalar::Timestamp(1_504_037_746_112),
                ),
            ],
            properties: vec![],
            application_properties: vec![("temperatureAlert".into(), s("false"))],
            body: br#"{"messageId":1,"temperature":25.5}"#.to_vec(),
        }
    }

    const SCHEMA_JSON: &str = r#"{"type":"struct","fields":[{"type":"string","optional":false,"field":"deviceId"},{"type":"string","optional":false,"field":"offset"},{"type":"string","optional":true,"field":"contentType"},{"type":"string","optional":false,"field":"enqueuedTime"},{"type":"int64","optional":false,"field":"sequenceNumber"},{"type":"string","optional":false,"field":"content"},{"type":"map","keys":{"type":"string","optional":false},"values":{"type":"string","optional":false},"optional":false,"field":"systemProperties"},{"type":"map","keys":{"type":"string","optional":false},"values":{"type":"string","optional":false},"optional":false,"field":"properties"}],"optional":false,"name":"iothub.kafka.connect","version":1}"#;
    const PAYLOAD_JSON: &str = r#"{"deviceId":"fakepi","offset":"8589934592","contentType":"","enqueuedTime":"2017-08-29T20:15:46.112Z","sequenceNumber":17,"content":"{\"messageId\":1,\"temperature\":25.5}","systemProperties":{"iothub-connection-auth-generation-id":"636395973391234567","iothub-connection-auth-method":"{\"scope\":\"device\",\"type\":\"sas\",\"issuer\":\"iothub\"}","iothub-enqueuedtime":"Tue Aug 29 20:15:46 UTC 2017"},"properties":{"temperatureAlert":"false"}}"#;

    fn convert(c: &Converter, ev: &IotEvent) -> String {
        let schema = iothub_value_schema();
        let value = Value::Struct(to_struct(ev));
        String::from_utf8(c.from_connect_data(Some(&schema), &value).unwrap().unwrap()).unwrap()
    }

    #[test]
    fn golden_json_schemas_enabled() {
        assert_eq!(
            convert(&Converter::json(true), &fakepi()),
            format!(r#"{{"schema":{SCHEMA_JSON},"payload":{PAYLOAD_JSON}}}"#)
        );
    }

    #[test]
    fn golden_json_schemas_disabled() {
        assert_eq!(convert(&Converter::json(false), &fakepi()), PAYLOAD_JSON);
    }

    #[test]
    fn golden_string_converter() {
        let c = Converter::String {
            encoding: JavaCharset::Utf8,
        };
        assert_eq!(
            convert(&c, &fakepi()),
            r#"Struct{deviceId=fakepi,offset=8589934592,contentType=,enqueuedTime=2017-08-29T20:15:46.112Z,sequenceNumber=17,content={"messageId":1,"temperature":25.5},systemProperties={iothub-connection-auth-generation-id=636395973391234567, iothub-connection-auth-method={"scope":"device","type":"sas","issuer":"iothub"}, iothub-enqueuedtime=Tue Aug 29 20:15:46 UTC 2017},properties={temperatureAlert=false}}"#
        );
    }

    #[test]
    fn byte_array_converter_refuses_the_struct() {
        let schema = iothub_value_schema();
        assert_eq!(
            Converter::ByteArray
                .check_schema(Some(&schema))
                .unwrap_err()
                .to_string(),
            "Invalid schema type for ByteArrayConverter: STRUCT"
        );
    }

    /// toketi's IotMessageConverterTest anchor: promoted keys leave the maps.
    #[test]
    fn promoted_keys_are_removed() {
        let ev = IotEvent {
            annotations: vec![
                ("iothub-connection-device-id".into(), s("d")),
                ("x-opt-sequence-number".into(), AmqpScalar::Long(5)),
                ("x-opt-offset".into(), s("10")),
                ("x-opt-enqueued-time".into(), AmqpScalar::Timestamp(0)),
            ],
            properties: vec![("correlation-id".into(), s("c1"))],
            application_properties: vec![
                ("timestamp".into(), s("t")),
                ("contentType".into(), s("application/json")),
            ],
            body: vec![],
        };
        let f = fields(&ev);
        assert_eq!(
            f.system_properties,
            vec![("correlation-id".into(), "c1".into())]
        );
        assert_eq!(f.properties, vec![("timestamp".into(), "t".into())]);
        assert_eq!(f.content_type, "application/json");
        assert_eq!(f.enqueued_time, "1970-01-01T00:00:00Z");
        assert_eq!(f.enqueued_time_ms, Some(0));
        assert_eq!(f.sequence_number, 5);
        assert_eq!(f.offset, "10");
        assert_eq!(f.device_id, "d");
    }

    /// A plain Event Hub event (no IoT Hub annotations): toketi's defaults.
    #[test]
    fn plain_event_hub_event_gets_defaults() {
        let ev = IotEvent {
            body: b"x".to_vec(),
            ..IotEvent::default()
        };
        let c = Converter::json(false);
        assert_eq!(
            convert(&c, &ev),
            r#"{"deviceId":"","offset":"","contentType":"","enqueuedTime":"","sequenceNumber":0,"content":"x","systemProperties":{},"properties":{}}"#
        );
    }

    #[test]
    fn non_string_values_are_stringified_java_style() {
        let ev = IotEvent {
            annotations: vec![
                ("x-opt-offset".into(), s("1")),
                ("x-opt-partition-key".into(), s("pk")),
                ("null-one".into(), AmqpScalar::Null),
            ],
            properties: vec![
                (
                    "message-id".into(),
                    AmqpScalar::Uuid([
                        0x12, 0x3e, 0x45, 0x67, 0xe8, 0x9b, 0x12, 0xd3, 0xa4, 0x56, 0x42, 0x66,
                        0x14, 0x17, 0x40, 0x00,
                    ]),
                ),
                ("user-id".into(), AmqpScalar::Binary(b"dev\x01".to_vec())),
                (
                    "absolute-expiry-time".into(),
                    AmqpScalar::Timestamp(1_521_446_468_000),
                ),
                ("group-sequence".into(), AmqpScalar::UInt(4_000_000_000)),
            ],
            application_properties: vec![
                ("i".into(), AmqpScalar::Int(-3)),
                ("d".into(), AmqpScalar::Double(1.0e7)),
                ("b".into(), AmqpScalar::Bool(true)),
                ("n".into(), AmqpScalar::Null),
                (
                    "contentType".into(),
                    AmqpScalar::Symbol("text/plain".into()),
                ),
            ],
            body: b"caf\xc3\xa9 \xff\xfe end \xf0\x9f\x94\x91".to_vec(),
        };
        let f = fields(&ev);
        assert_eq!(
            f.system_properties,
            vec![
                ("x-opt-partition-key".to_string(), "pk".to_string()),
                (
                    "message-id".to_string(),
                    "123e4567-e89b-12d3-a456-426614174000".to_string()
                ),
                ("user-id".to_string(), "dev\\x01".to_string()),
                (
                    "absolute-expiry-time".to_string(),
                    "Mon Mar 19 08:01:08 UTC 2018".to_string()
                ),
                ("group-sequence".to_string(), "4000000000".to_string()),
            ]
        );
        assert_eq!(
            f.properties,
            vec![
                ("i".to_string(), "-3".to_string()),
                ("d".to_string(), "1.0E7".to_string()),
                ("b".to_string(), "true".to_string()),
            ]
        );
        assert_eq!(f.content_type, "text/plain");
        assert_eq!(f.content, "café \u{FFFD}\u{FFFD} end \u{1F511}");
        // Non-BMP characters are escaped as surrogate pairs in JSON; everything else stays raw.
        let json = convert(&Converter::json(false), &ev);
        assert!(
            json.contains("\"content\":\"café \u{FFFD}\u{FFFD} end \\uD83D\\uDD11\""),
            "{json}"
        );
        assert_eq!(f.enqueued_time, "");
        assert_eq!(f.sequence_number, 0);
    }

    #[test]
    fn properties_section_overrides_annotation_of_same_name() {
        let ev = IotEvent {
            annotations: vec![
                ("message-id".into(), s("from-annotation")),
                ("a".into(), s("1")),
            ],
            properties: vec![("message-id".into(), s("from-properties"))],
            ..IotEvent::default()
        };
        assert_eq!(
            fields(&ev).system_properties,
            vec![
                ("message-id".to_string(), "from-properties".to_string()),
                ("a".to_string(), "1".to_string())
            ]
        );
    }
}

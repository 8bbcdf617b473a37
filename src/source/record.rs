//! The Kafka record of one received event.
//!
//! * Default (`Kafka.RecordFormat=struct`): toketi's record. Value = the `iothub.kafka.connect` Struct
//!   (built by `connect::record` from a library-neutral [`IotEvent`]) through the value converter; key
//!   null (or the device id through the key converter with `Kafka.RecordKey=deviceId`); no timestamp;
//!   no headers.
//! * `Kafka.RecordFormat=raw`: value = the body bytes untouched; key = the device id (UTF-8); headers =
//!   the system properties (including `iothub-connection-device-id`, `x-opt-offset`,
//!   `x-opt-sequence-number`, `x-opt-enqueued-time`) then the application properties, rendered as in
//!   the Struct's maps; timestamp = the enqueued time.

use crate::config::connector::{RecordFormat, RecordKey};
use crate::config::{ConnectorConfig, WorkerConfig, JSON_CONVERTER, STRING_CONVERTER};
use crate::connect::convert::Converter;
use crate::connect::json;
use crate::connect::record::{
    into_fields, iothub_value_schema, AmqpScalar, IotEvent, IotRecordFields,
};
use crate::connect::{Schema, Type, Value};
use azure_core_amqp::message::{AmqpAnnotationKey, AmqpMessageBody, AmqpMessageId};
use azure_core_amqp::{AmqpSimpleValue, AmqpValue};
use azure_messaging_eventhubs::models::ReceivedEventData;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A record ready for the producer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OutRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Milliseconds since the epoch; None = producer/broker time.
    pub timestamp: Option<i64>,
}

/// Builds records for one connector (converters configured once, at start).
pub struct RecordBuilder {
    format: RecordFormat,
    key_mode: RecordKey,
    key: Converter,
    value: Converter,
    value_schema: Arc<Schema>,
    key_schema: Arc<Schema>,
}

impl RecordBuilder {
    /// Configures the converters (the connector's, else the worker's). A converter that cannot write
    /// this record (ByteArrayConverter for the Struct value) is refused here, at start-up, with the
    /// error Connect would raise on the first record.
    pub fn new(
        worker: &WorkerConfig,
        connector: &ConnectorConfig,
    ) -> anyhow::Result<RecordBuilder> {
        let source = connector
            .source
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("not a source connector"))?;
        let kspec = connector.effective_key_converter(&worker.key_converter);
        let vspec = connector.effective_value_converter(&worker.value_converter);
        let key = Converter::configure(&kspec.class, &kspec.props, true)
            .map_err(|e| anyhow::anyhow!("key.converter: {e}"))?;
        let value = Converter::configure(&vspec.class, &vspec.props, false)
            .map_err(|e| anyhow::anyhow!("value.converter: {e}"))?;
        let value_schema = iothub_value_schema();
        let key_schema = Arc::new(Schema::new(Type::String));
        if source.record_format == RecordFormat::Struct {
            value.check_schema(Some(&value_schema)).map_err(|e| {
                anyhow::anyhow!(
                    "value.converter={} cannot write the IoT Hub record ({e}); use {JSON_CONVERTER} or {STRING_CONVERTER}, \
                     or Kafka.RecordFormat=raw to write the message bodies untouched",
                    vspec.class
                )
            })?;
            if source.record_key == RecordKey::DeviceId {
                key.check_schema(Some(&key_schema)).map_err(|e| {
                    anyhow::anyhow!(
                        "key.converter={} cannot write the device id key ({e}); use {STRING_CONVERTER} or {JSON_CONVERTER}",
                        kspec.class
                    )
                })?;
            }
        }
        Ok(RecordBuilder {
            format: source.record_format,
            key_mode: source.record_key,
            key,
            value,
            value_schema,
            key_schema,
        })
    }

    /// The record of one event.
    pub fn build(&self, ev: &ReceivedEventData) -> anyhow::Result<OutRecord> {
        self.build_owned(iot_event(ev)?)
    }

    /// The record of one event already in library-neutral form.
    pub fn build_event(&self, event: &IotEvent) -> anyhow::Result<OutRecord> {
        self.build_owned(event.clone())
    }

    /// The record of one event, consuming it: its strings and body move into the record (one copy
    /// of the body per event, into the converter's output; none in the raw format).
    pub fn build_owned(&self, mut event: IotEvent) -> anyhow::Result<OutRecord> {
        match self.format {
            RecordFormat::Struct => {
                let f = into_fields(event);
                let key = match self.key_mode {
                    RecordKey::None => None,
                    // [source] An event with no device id (plain Event Hub, Digital Twins, routed
                    // endpoint) has a null key, as toketi's records: no device order to keep.
                    RecordKey::DeviceId if f.device_id.is_empty() => None,
                    RecordKey::DeviceId => self
                        .key
                        .from_connect_data(
                            Some(&self.key_schema),
                            &Value::String(f.device_id.clone()),
                        )
                        .map_err(|e| anyhow::anyhow!("{e}"))?,
                };
                let value = match &self.value {
                    // Fast path: the same bytes, written straight from the fields.
                    Converter::Json(j) => Some(
                        j.write_direct(&self.value_schema, |o| write_json_payload(&f, o))
                            .map_err(|e| anyhow::anyhow!("{e}"))?,
                    ),
                    other => other
                        .from_connect_data(
                            Some(&self.value_schema),
                            &Value::Struct(f.into_struct()),
                        )
                        .map_err(|e| anyhow::anyhow!("{e}"))?,
                };
                Ok(OutRecord {
                    key,
                    value,
                    headers: Vec::new(),
                    timestamp: None,
                })
            }
            RecordFormat::Raw => {
                let body = std::mem::take(&mut event.body);
                let f = into_fields(event);
                let mut headers: Vec<(String, Vec<u8>)> =
                    Vec::with_capacity(5 + f.system_properties.len() + f.properties.len());
                let promoted = [
                    ("iothub-connection-device-id", f.device_id.clone()),
                    ("x-opt-offset", f.offset),
                    ("x-opt-sequence-number", f.sequence_number.to_string()),
                    ("x-opt-enqueued-time", f.enqueued_time),
                ];
                for (h, v) in promoted {
                    if !v.is_empty() {
                        headers.push((h.to_string(), v.into_bytes()));
                    }
                }
                for (k, v) in f.system_properties.into_iter().chain(f.properties) {
                    headers.push((k, v.into_bytes()));
                }
                if !f.content_type.is_empty() {
                    headers.push(("contentType".into(), f.content_type.into_bytes()));
                }
                Ok(OutRecord {
                    // [source] No device id (plain Event Hub event): null key.
                    key: (!f.device_id.is_empty()).then(|| f.device_id.into_bytes()),
                    value: Some(body),
                    headers,
                    timestamp: f.enqueued_time_ms,
                })
            }
        }
    }
}

/// The payload JSON `JsonConverter` writes for [`IotRecordFields::into_struct`] of `f`
/// with [`iothub_value_schema`], written straight from the fields (no `Struct` in between):
/// fields in schema order, both maps as objects (their keys are unique already). Proven
/// byte-identical to the converter by `connect::proptests`.
pub fn write_json_payload(f: &IotRecordFields, out: &mut Vec<u8>) {
    let map = |out: &mut Vec<u8>, m: &[(String, String)]| {
        json::write_str_object(out, m.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    };
    out.extend_from_slice(b"{\"deviceId\":");
    json::write_str(out, &f.device_id);
    out.extend_from_slice(b",\"offset\":");
    json::write_str(out, &f.offset);
    out.extend_from_slice(b",\"contentType\":");
    json::write_str(out, &f.content_type);
    out.extend_from_slice(b",\"enqueuedTime\":");
    json::write_str(out, &f.enqueued_time);
    out.extend_from_slice(b",\"sequenceNumber\":");
    json::write_i64(out, f.sequence_number);
    out.extend_from_slice(b",\"content\":");
    json::write_str(out, &f.content);
    out.extend_from_slice(b",\"systemProperties\":");
    map(out, &f.system_properties);
    out.extend_from_slice(b",\"properties\":");
    map(out, &f.properties);
    out.push(b'}');
}

fn epoch_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

fn ts(t: &azure_core_amqp::AmqpTimestamp) -> AmqpScalar {
    match t.0 {
        Some(t) => AmqpScalar::Timestamp(epoch_ms(t)),
        None => AmqpScalar::Null,
    }
}

fn scalar(v: &AmqpValue) -> AmqpScalar {
    match v {
        AmqpValue::Null => AmqpScalar::Null,
        AmqpValue::Boolean(b) => AmqpScalar::Bool(*b),
        AmqpValue::UByte(n) => AmqpScalar::UByte(*n),
        AmqpValue::UShort(n) => AmqpScalar::UShort(*n),
        AmqpValue::UInt(n) => AmqpScalar::UInt(*n),
        AmqpValue::ULong(n) => AmqpScalar::ULong(*n),
        AmqpValue::Byte(n) => AmqpScalar::Byte(*n),
        AmqpValue::Short(n) => AmqpScalar::Short(*n),
        AmqpValue::Int(n) => AmqpScalar::Int(*n),
        AmqpValue::Long(n) => AmqpScalar::Long(*n),
        AmqpValue::Float(f) => AmqpScalar::Float(*f),
        AmqpValue::Double(f) => AmqpScalar::Double(*f),
        AmqpValue::Char(c) => AmqpScalar::Char(*c),
        AmqpValue::TimeStamp(t) => ts(t),
        AmqpValue::Uuid(u) => AmqpScalar::Uuid(*u.as_bytes()),
        AmqpValue::Binary(b) => AmqpScalar::Binary(b.clone()),
        AmqpValue::String(s) => AmqpScalar::String(s.clone()),
        AmqpValue::Symbol(s) => AmqpScalar::Symbol(s.0.clone()),
        other => AmqpScalar::String(format!("{other:?}")),
    }
}

fn simple(v: &AmqpSimpleValue) -> AmqpScalar {
    match v {
        AmqpSimpleValue::Null => AmqpScalar::Null,
        AmqpSimpleValue::Boolean(b) => AmqpScalar::Bool(*b),
        AmqpSimpleValue::UByte(n) => AmqpScalar::UByte(*n),
        AmqpSimpleValue::UShort(n) => AmqpScalar::UShort(*n),
        AmqpSimpleValue::UInt(n) => AmqpScalar::UInt(*n),
        AmqpSimpleValue::ULong(n) => AmqpScalar::ULong(*n),
        AmqpSimpleValue::Byte(n) => AmqpScalar::Byte(*n),
        AmqpSimpleValue::Short(n) => AmqpScalar::Short(*n),
        AmqpSimpleValue::Int(n) => AmqpScalar::Int(*n),
        AmqpSimpleValue::Long(n) => AmqpScalar::Long(*n),
        AmqpSimpleValue::Float(f) => AmqpScalar::Float(*f),
        AmqpSimpleValue::Double(f) => AmqpScalar::Double(*f),
        AmqpSimpleValue::Char(c) => AmqpScalar::Char(*c),
        AmqpSimpleValue::TimeStamp(t) => ts(t),
        AmqpSimpleValue::Uuid(u) => AmqpScalar::Uuid(*u.as_bytes()),
        AmqpSimpleValue::String(s) => AmqpScalar::String(s.clone()),
        AmqpSimpleValue::Binary(b) => AmqpScalar::Binary(b.clone()),
        AmqpSimpleValue::Symbol(s) => AmqpScalar::Symbol(s.0.clone()),
        other => AmqpScalar::String(format!("{other:?}")),
    }
}

fn message_id(id: &AmqpMessageId) -> AmqpScalar {
    match id {
        AmqpMessageId::String(s) => AmqpScalar::String(s.clone()),
        AmqpMessageId::Uuid(u) => AmqpScalar::Uuid(*u.as_bytes()),
        AmqpMessageId::Binary(b) => AmqpScalar::Binary(b.clone()),
        AmqpMessageId::Ulong(n) => AmqpScalar::ULong(*n),
    }
}

/// The library-neutral description of a received event (annotations, properties section fields
/// present, application properties, body).
pub fn iot_event(ev: &ReceivedEventData) -> anyhow::Result<IotEvent> {
    let m = ev.raw_amqp_message();
    let mut annotations = Vec::new();
    if let Some(a) = &m.message_annotations {
        for (k, v) in a.0.iter() {
            let key = match k {
                AmqpAnnotationKey::Symbol(s) => s.0.clone(),
                AmqpAnnotationKey::Ulong(n) => n.to_string(),
            };
            annotations.push((key, scalar(v)));
        }
    }
    let mut properties = Vec::new();
    if let Some(p) = &m.properties {
        let mut put = |k: &str, v: AmqpScalar| properties.push((k.to_string(), v));
        if let Some(v) = &p.message_id {
            put("message-id", message_id(v));
        }
        if let Some(v) = &p.user_id {
            put("user-id", AmqpScalar::Binary(v.clone()));
        }
        if let Some(v) = &p.to {
            put("to", AmqpScalar::String(v.clone()));
        }
        if let Some(v) = &p.subject {
            put("subject", AmqpScalar::String(v.clone()));
        }
        if let Some(v) = &p.reply_to {
            put("reply-to", AmqpScalar::String(v.clone()));
        }
        if let Some(v) = &p.correlation_id {
            put("correlation-id", message_id(v));
        }
        if let Some(v) = &p.content_type {
            put("content-type", AmqpScalar::String(v.0.clone()));
        }
        if let Some(v) = &p.content_encoding {
            put("content-encoding", AmqpScalar::String(v.0.clone()));
        }
        if let Some(v) = &p.absolute_expiry_time {
            put("absolute-expiry-time", ts(v));
        }
        if let Some(v) = &p.creation_time {
            put("creation-time", ts(v));
        }
        if let Some(v) = &p.group_id {
            put("group-id", AmqpScalar::String(v.clone()));
        }
        if let Some(v) = &p.group_sequence {
            put("group-sequence", AmqpScalar::UInt(*v));
        }
        if let Some(v) = &p.reply_to_group_id {
            put("reply-to-group-id", AmqpScalar::String(v.clone()));
        }
    }
    let mut application_properties = Vec::new();
    if let Some(ap) = &m.application_properties {
        for (k, v) in ap.0.iter() {
            application_properties.push((k.clone(), simple(v)));
        }
    }
    let body = match &m.body {
        AmqpMessageBody::Binary(sections) => {
            if sections.len() == 1 {
                sections[0].clone()
            } else {
                sections.concat()
            }
        }
        AmqpMessageBody::Empty => Vec::new(),
        AmqpMessageBody::Value(AmqpValue::String(s)) => s.clone().into_bytes(),
        AmqpMessageBody::Value(AmqpValue::Binary(b)) => b.clone(),
        AmqpMessageBody::Value(_) | AmqpMessageBody::Sequence(_) => anyhow::bail!(
            "the event's body is an AMQP value or sequence, not data: it has no bytes to write (offset {})",
            ev.offset().clone().unwrap_or_default()
        ),
    };
    Ok(IotEvent {
        annotations,
        properties,
        application_properties,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::record::fields;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// The direct JSON path writes exactly what JsonConverter writes for the toketi Struct,
        /// with and without schemas (and again once the schema is cached).
        #[test]
        fn the_direct_json_path_is_byte_identical_to_the_converter(
            ev in crate::connect::proptests::event()
        ) {
            let schema = iothub_value_schema();
            let f = fields(&ev);
            for schemas in [false, true] {
                let Converter::Json(j) = Converter::json(schemas) else { unreachable!() };
                for _ in 0..2 {
                    let generic = j
                        .from_connect_data(Some(&schema), &Value::Struct(f.to_struct()))
                        .unwrap()
                        .unwrap();
                    let direct = j.write_direct(&schema, |o| write_json_payload(&f, o)).unwrap();
                    prop_assert_eq!(String::from_utf8(direct).unwrap(), String::from_utf8(generic).unwrap());
                }
            }
        }
    }
}

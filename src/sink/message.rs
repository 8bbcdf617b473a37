//! Kafka record value → cloud-to-device message.
//!
//! # Accepted forms
//! | converter | value | fields |
//! |---|---|---|
//! | JsonConverter, `schemas.enable=true` | Struct | `deviceId`, `message`, `messageId`, optional `expiry` / `expiryTime` |
//! | JsonConverter, `schemas.enable=false` | Map (schemaless JSON object) | same |
//! | StringConverter | String holding a JSON object | same |
//! | ByteArrayConverter | bytes holding a UTF-8 JSON object | same |
//!
//! # Differences from the Java sink (toketi.md §3.3), all deliberate
//! * Schemaless maps are accepted (Java: NullPointerException, the task dies).
//! * Both expiry spellings (`expiry` and `expiryTime`) are accepted in every form (Java: `expiry`
//!   only in a Struct, `expiryTime` only in JSON). Setting both to different values is an error.
//! * Expiry is RFC 3339, with or without fractional seconds, `Z` or a numeric offset. An
//!   unparsable expiry is a record error (Java's JSON path silently dropped it, so the message
//!   never expired). An expiry already in the past is a record error too (IoT Hub would discard
//!   the message; the record goes to `errors.tolerance` instead of vanishing).
//! * A null `deviceId` or `messageId`, or an empty `deviceId`, is a record error (Java passed
//!   null on). A field of the wrong type (e.g. a number) is an error in every form.
//! * A tombstone (null value) is a record error with a clear message (Java: NullPointerException).
//! * Error messages name the problem and chain the JSON parser's reason (Java dropped the cause).
//! * `iothub-ack` carries the documented wire values `none`/`full`/`positive`/`negative` (the
//!   Java SDK sent `positiveonly`/`negativeonly`).
//! * The record key is ignored, as in Java: the device comes from the value.

use crate::connect::schema::{Schema, Type};
use crate::connect::value::Value;
use crate::iothub::c2d::{AckMode, C2dMessage};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why a record could not be turned into a C2D message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("the record value is null (a tombstone); a C2D message needs deviceId, message and messageId")]
    NullValue,
    #[error("the record value is not valid JSON: {0}")]
    BadJson(String),
    #[error("the record value is {0}; expected a Struct, a JSON object, or a string or bytes holding a JSON object")]
    UnsupportedValue(String),
    #[error("the record value has no field '{0}' (required: deviceId, message, messageId)")]
    MissingField(&'static str),
    #[error("field '{field}' must be a string, found {found}")]
    WrongType { field: &'static str, found: String },
    #[error("field 'deviceId' is empty")]
    EmptyDeviceId,
    #[error("expiry '{value}' is not an RFC 3339 time (e.g. 2017-01-19T19:25:50Z or 2017-01-19T19:25:50.123Z): {reason}")]
    BadExpiry { value: String, reason: String },
    #[error("fields 'expiry' ({0}) and 'expiryTime' ({1}) disagree")]
    ConflictingExpiry(String, String),
    #[error("expiry {0} is in the past")]
    Expired(String),
}

/// The message fields read from a record, before building the AMQP message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub device_id: String,
    pub message_id: String,
    pub message: String,
    pub expiry: Option<SystemTime>,
}

impl Parsed {
    pub fn into_c2d(self, ack: AckMode) -> C2dMessage {
        let mut m = C2dMessage::new(self.device_id, self.message_id, self.message.into_bytes());
        m.expiry = self.expiry;
        m.ack = ack;
        m
    }
}

/// Converts a record value (as the value converter produced it) into a C2D message.
pub fn to_c2d(
    schema: Option<&Schema>,
    value: &Value,
    ack: AckMode,
    now: SystemTime,
) -> Result<C2dMessage, MessageError> {
    Ok(parse(schema, value, now)?.into_c2d(ack))
}

/// Reads the fields of a record value (see the module docs for the accepted forms).
pub fn parse(
    _schema: Option<&Schema>,
    value: &Value,
    now: SystemTime,
) -> Result<Parsed, MessageError> {
    match value {
        Value::Null => Err(MessageError::NullValue),
        Value::Struct(s) => {
            let get = |name: &str| -> Option<Field> { s.get(name).map(Field::from_connect) };
            build(get, now)
        }
        Value::Map(pairs) => {
            let get = |name: &str| -> Option<Field> {
                pairs.iter().find_map(|(k, v)| match k {
                    Value::String(k) if k == name => Some(Field::from_connect(v)),
                    _ => None,
                })
            };
            build(get, now)
        }
        Value::String(s) => from_json(s.as_bytes(), now),
        Value::Bytes(b) => from_json(b, now),
        other => Err(MessageError::UnsupportedValue(describe(other))),
    }
}

fn from_json(bytes: &[u8], now: SystemTime) -> Result<Parsed, MessageError> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| MessageError::BadJson(e.to_string()))?;
    let serde_json::Value::Object(map) = v else {
        return Err(MessageError::UnsupportedValue(format!(
            "a JSON {}",
            json_kind(&v)
        )));
    };
    let get = |name: &str| -> Option<Field> { map.get(name).map(Field::from_json) };
    build(get, now)
}

/// A field value reduced to what matters here.
enum Field {
    Null,
    Str(String),
    Other(String),
}

impl Field {
    fn from_connect(v: &Value) -> Field {
        match v {
            Value::Null => Field::Null,
            Value::String(s) => Field::Str(s.clone()),
            other => Field::Other(describe(other)),
        }
    }
    fn from_json(v: &serde_json::Value) -> Field {
        match v {
            serde_json::Value::Null => Field::Null,
            serde_json::Value::String(s) => Field::Str(s.clone()),
            other => Field::Other(format!("a JSON {}", json_kind(other))),
        }
    }
}

fn build(get: impl Fn(&str) -> Option<Field>, now: SystemTime) -> Result<Parsed, MessageError> {
    let required = |name: &'static str| -> Result<String, MessageError> {
        match get(name) {
            None | Some(Field::Null) => Err(MessageError::MissingField(name)),
            Some(Field::Str(s)) => Ok(s),
            Some(Field::Other(found)) => Err(MessageError::WrongType { field: name, found }),
        }
    };
    let optional = |name: &'static str| -> Result<Option<String>, MessageError> {
        match get(name) {
            None | Some(Field::Null) => Ok(None),
            Some(Field::Str(s)) => Ok(Some(s)),
            Some(Field::Other(found)) => Err(MessageError::WrongType { field: name, found }),
        }
    };
    let device_id = required("deviceId")?;
    if device_id.trim().is_empty() {
        return Err(MessageError::EmptyDeviceId);
    }
    let message = required("message")?;
    let message_id = required("messageId")?;
    let expiry = match (optional("expiry")?, optional("expiryTime")?) {
        (None, None) => None,
        (Some(a), None) | (None, Some(a)) => Some(parse_expiry(&a)?),
        (Some(a), Some(b)) => {
            let (ta, tb) = (parse_expiry(&a)?, parse_expiry(&b)?);
            if ta != tb {
                return Err(MessageError::ConflictingExpiry(a, b));
            }
            Some(ta)
        }
    };
    if let Some(t) = expiry {
        if t <= now {
            return Err(MessageError::Expired(format_time(t)));
        }
    }
    Ok(Parsed {
        device_id,
        message_id,
        message,
        expiry,
    })
}

/// RFC 3339 (`Z` or offset, optional fractional seconds) → time.
pub fn parse_expiry(s: &str) -> Result<SystemTime, MessageError> {
    let t = s.trim();
    let dt = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .map_err(|e| MessageError::BadExpiry {
            value: s.to_string(),
            reason: e.to_string(),
        })?;
    let nanos = dt.unix_timestamp_nanos();
    if nanos < 0 {
        return Err(MessageError::BadExpiry {
            value: s.to_string(),
            reason: "before 1970".into(),
        });
    }
    Ok(UNIX_EPOCH + Duration::from_nanos(nanos as u64))
}

fn format_time(t: SystemTime) -> String {
    let nanos = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0);
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{nanos} ns since 1970"))
}

fn describe(v: &Value) -> String {
    match v.inferred_type() {
        Some(t) => format!("of type {}", type_name(t)),
        None => "of unknown type".into(),
    }
}

fn type_name(t: Type) -> &'static str {
    t.java_name()
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::convert::Converter;
    use std::collections::BTreeMap;

    fn now() -> SystemTime {
        // 2020-01-01T00:00:00Z
        UNIX_EPOCH + Duration::from_secs(1_577_836_800)
    }

    fn convert(class: &str, schemas: bool, bytes: &[u8]) -> Result<Parsed, MessageError> {
        let mut props = BTreeMap::new();
        props.insert("schemas.enable".to_string(), schemas.to_string());
        let c = Converter::configure(class, &props, false).unwrap();
        let (schema, value) = c.to_connect_data(Some(bytes)).unwrap();
        parse(schema.as_deref(), &value, now())
    }

    const TUTORIAL: &str = r#"{"messageId":"msg1","message":"Turn On","deviceId":"myDeviceId"}"#;

    #[test]
    fn tutorial_json_string() {
        let p = convert("StringConverter", false, TUTORIAL.as_bytes()).unwrap();
        assert_eq!(p.device_id, "myDeviceId");
        assert_eq!(p.message_id, "msg1");
        assert_eq!(p.message, "Turn On");
        assert_eq!(p.expiry, None);
        let m = p.into_c2d(AckMode::Full);
        assert_eq!(m.body, b"Turn On");
        assert_eq!(m.ack, AckMode::Full);
    }

    #[test]
    fn schemaless_map_and_bytes() {
        let p = convert("JsonConverter", false, TUTORIAL.as_bytes()).unwrap();
        assert_eq!(p.device_id, "myDeviceId");
        let p = convert("ByteArrayConverter", false, TUTORIAL.as_bytes()).unwrap();
        assert_eq!(p.message_id, "msg1");
    }

    #[test]
    fn struct_with_both_expiry_spellings() {
        for field in ["expiry", "expiryTime"] {
            let env = format!(
                r#"{{"schema":{{"type":"struct","name":"iothub.kafka.connect.cloud2device.message","fields":[
                {{"field":"deviceId","type":"string"}},{{"field":"message","type":"string"}},
                {{"field":"messageId","type":"string"}},{{"field":"{field}","type":"string","optional":true}}]}},
                "payload":{{"deviceId":"d1","message":"m","messageId":"id1","{field}":"2030-01-19T19:25:50.250Z"}}}}"#
            );
            let p = convert("JsonConverter", true, env.as_bytes()).unwrap();
            assert_eq!(p.device_id, "d1");
            let exp = p.expiry.unwrap().duration_since(UNIX_EPOCH).unwrap();
            assert_eq!(exp.as_millis(), 1_895_081_150_250);
        }
    }

    #[test]
    fn json_expiry_both_spellings_with_and_without_fraction() {
        for (field, v) in [
            ("expiryTime", "2030-01-19T19:25:50Z"),
            ("expiry", "2030-01-19T19:25:50Z"),
            ("expiryTime", "2030-01-19T19:25:50.123456Z"),
            ("expiry", "2030-01-19T20:25:50+01:00"),
        ] {
            let j = format!(r#"{{"deviceId":"d","message":"m","messageId":"i","{field}":"{v}"}}"#);
            let p = convert("StringConverter", false, j.as_bytes()).unwrap();
            let s = p.expiry.unwrap().duration_since(UNIX_EPOCH).unwrap();
            assert_eq!(s.as_secs(), 1_895_081_150, "{field}={v}");
        }
    }

    #[test]
    fn errors_are_typed_and_clear() {
        let e = |j: &str| convert("StringConverter", false, j.as_bytes()).unwrap_err();
        assert_eq!(
            e(r#"{"message":"m","messageId":"i"}"#),
            MessageError::MissingField("deviceId")
        );
        assert_eq!(
            e(r#"{"deviceId":"d","messageId":"i"}"#),
            MessageError::MissingField("message")
        );
        assert_eq!(
            e(r#"{"deviceId":null,"message":"m","messageId":"i"}"#),
            MessageError::MissingField("deviceId")
        );
        assert!(matches!(e("{not json"), MessageError::BadJson(_)));
        assert!(matches!(e("[1,2]"), MessageError::UnsupportedValue(_)));
        assert!(matches!(
            e(r#"{"deviceId":5,"message":"m","messageId":"i"}"#),
            MessageError::WrongType {
                field: "deviceId",
                ..
            }
        ));
        assert_eq!(
            e(r#"{"deviceId":"","message":"m","messageId":"i"}"#),
            MessageError::EmptyDeviceId
        );
        let past = e(
            r#"{"deviceId":"d","message":"m","messageId":"i","expiryTime":"2017-01-19T19:25:50Z"}"#,
        );
        assert_eq!(past, MessageError::Expired("2017-01-19T19:25:50Z".into()));
        assert!(past.to_string().contains("in the past"));
        assert!(matches!(
            e(r#"{"deviceId":"d","message":"m","messageId":"i","expiry":"tomorrow"}"#),
            MessageError::BadExpiry { .. }
        ));
        assert!(matches!(
            e(
                r#"{"deviceId":"d","message":"m","messageId":"i","expiry":"2030-01-01T00:00:00Z","expiryTime":"2031-01-01T00:00:00Z"}"#
            ),
            MessageError::ConflictingExpiry(..)
        ));
        // a tombstone
        let c = Converter::configure("StringConverter", &BTreeMap::new(), false).unwrap();
        let (s, v) = c.to_connect_data(None).unwrap();
        assert_eq!(
            parse(s.as_deref(), &v, now()).unwrap_err(),
            MessageError::NullValue
        );
        // a JSON number with schemas
        let env = br#"{"schema":{"type":"int32"},"payload":5}"#;
        assert!(matches!(
            convert("JsonConverter", true, env).unwrap_err(),
            MessageError::UnsupportedValue(_)
        ));
    }

    #[test]
    fn struct_field_of_wrong_type() {
        let env = br#"{"schema":{"type":"struct","fields":[{"field":"deviceId","type":"string"},{"field":"message","type":"int32"},{"field":"messageId","type":"string"}]},"payload":{"deviceId":"d","message":5,"messageId":"i"}}"#;
        assert!(matches!(
            convert("JsonConverter", true, env).unwrap_err(),
            MessageError::WrongType {
                field: "message",
                ..
            }
        ));
    }

    mod properties {
        use super::super::*;
        use crate::connect::convert::{
            Converter, BYTE_ARRAY_CONVERTER, JSON_CONVERTER, STRING_CONVERTER,
        };
        use proptest::prelude::*;
        use std::collections::BTreeMap;

        fn converters() -> Vec<Converter> {
            let mut off = BTreeMap::new();
            off.insert("schemas.enable".to_string(), "false".to_string());
            vec![
                Converter::configure(JSON_CONVERTER, &BTreeMap::new(), false).unwrap(),
                Converter::configure(JSON_CONVERTER, &off, false).unwrap(),
                Converter::configure(STRING_CONVERTER, &BTreeMap::new(), false).unwrap(),
                Converter::configure(BYTE_ARRAY_CONVERTER, &BTreeMap::new(), false).unwrap(),
            ]
        }

        fn check(bytes: &[u8]) {
            let now = SystemTime::now();
            for c in converters() {
                if let Ok((schema, value)) = c.to_connect_data(Some(bytes)) {
                    if let Ok(m) = to_c2d(schema.as_deref(), &value, AckMode::Full, now) {
                        assert!(!m.device_id.trim().is_empty());
                        let _ = m.into_amqp();
                    }
                }
            }
        }

        proptest! {
            /// Every converter's `to_connect_data` on arbitrary bytes, then the sink's parsing:
            /// never a panic; whatever is accepted has a device id.
            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
                check(&bytes);
            }

            /// JSON-shaped input with arbitrary field values (the interesting paths).
            #[test]
            fn arbitrary_json_messages_never_panic(
                device in proptest::option::of("[ -~]{0,12}"),
                id in proptest::option::of(any::<String>()),
                msg in proptest::option::of(any::<String>()),
                expiry in proptest::option::of(prop_oneof![
                    "[0-9T:.Z+-]{0,30}",
                    Just("2999-01-01T00:00:00Z".to_string()),
                    Just("2000-01-01T00:00:00.5+01:00".to_string()),
                ]),
                as_struct in any::<bool>(),
            ) {
                let mut obj = serde_json::Map::new();
                if let Some(d) = device { obj.insert("deviceId".into(), d.into()); }
                if let Some(i) = id { obj.insert("messageId".into(), i.into()); }
                if let Some(m) = msg { obj.insert("message".into(), m.into()); }
                if let Some(e) = expiry { obj.insert("expiryTime".into(), e.into()); }
                let payload = if as_struct {
                    let fields: Vec<serde_json::Value> = obj.keys().map(|k| serde_json::json!({"field": k, "type": "string", "optional": true})).collect();
                    serde_json::json!({"schema": {"type": "struct", "fields": fields}, "payload": obj})
                } else {
                    serde_json::Value::Object(obj)
                };
                check(&serde_json::to_vec(&payload).unwrap());
            }
        }
    }
}

//! Property tests (proptest) of the data model, the converters and the toketi record builder:
//! no panic on arbitrary input, stated round trips, and bounded time for huge property maps.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::convert::{Converter, BYTE_ARRAY_CONVERTER, JSON_CONVERTER, STRING_CONVERTER};
use super::json;
use super::record::{fields, iothub_value_schema, to_struct, AmqpScalar, IotEvent};
use super::value::Value;

/// Every converter configuration the worker can build.
fn converters() -> Vec<Converter> {
    let mut v = Vec::new();
    for enable in ["true", "false"] {
        let mut p = BTreeMap::new();
        p.insert("schemas.enable".to_string(), enable.to_string());
        v.push(Converter::configure(JSON_CONVERTER, &p, false).expect("json"));
        p.insert("decimal.format".to_string(), "NUMERIC".to_string());
        p.insert("replace.null.with.default".to_string(), "false".to_string());
        v.push(Converter::configure(JSON_CONVERTER, &p, false).expect("json numeric"));
    }
    for enc in [
        "UTF-8",
        "US-ASCII",
        "ISO-8859-1",
        "UTF-16",
        "UTF-16LE",
        "windows-1252",
    ] {
        let mut p = BTreeMap::new();
        p.insert("converter.encoding".to_string(), enc.to_string());
        v.push(Converter::configure(STRING_CONVERTER, &p, false).expect("string"));
    }
    v.push(Converter::configure(BYTE_ARRAY_CONVERTER, &BTreeMap::new(), false).expect("bytes"));
    v
}

fn scalar() -> impl Strategy<Value = AmqpScalar> {
    prop_oneof![
        Just(AmqpScalar::Null),
        any::<bool>().prop_map(AmqpScalar::Bool),
        any::<u8>().prop_map(AmqpScalar::UByte),
        any::<u16>().prop_map(AmqpScalar::UShort),
        any::<u32>().prop_map(AmqpScalar::UInt),
        any::<u64>().prop_map(AmqpScalar::ULong),
        any::<i8>().prop_map(AmqpScalar::Byte),
        any::<i16>().prop_map(AmqpScalar::Short),
        any::<i32>().prop_map(AmqpScalar::Int),
        any::<i64>().prop_map(AmqpScalar::Long),
        any::<f32>().prop_map(AmqpScalar::Float),
        any::<f64>().prop_map(AmqpScalar::Double),
        any::<char>().prop_map(AmqpScalar::Char),
        // The whole range java.util.Date can print (years 1..9999 and beyond are clamped by
        // `date_to_string`; keep within what an AMQP timestamp carries in practice).
        (-62_135_596_800_000i64..253_402_300_799_000).prop_map(AmqpScalar::Timestamp),
        any::<[u8; 16]>().prop_map(AmqpScalar::Uuid),
        proptest::collection::vec(any::<u8>(), 0..24).prop_map(AmqpScalar::Binary),
        ".{0,24}".prop_map(AmqpScalar::String),
        ".{0,12}".prop_map(AmqpScalar::Symbol),
    ]
}

/// Keys drawn from a small set (so repeats and the promoted names occur) or arbitrary.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "iothub-connection-device-id",
            "x-opt-offset",
            "x-opt-sequence-number",
            "x-opt-enqueued-time",
            "contentType",
            "message-id",
            "a",
            "b",
        ])
        .prop_map(str::to_string),
        ".{0,10}",
    ]
}

pub(crate) fn event() -> impl Strategy<Value = IotEvent> {
    let pairs = |n| proptest::collection::vec((key(), scalar()), 0..n);
    (
        pairs(12),
        pairs(6),
        pairs(24),
        proptest::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(
            |(annotations, properties, application_properties, body)| IotEvent {
                annotations,
                properties,
                application_properties,
                body,
            },
        )
}

/// Jackson's string escaping, one character at a time (the rules of `json`'s module documentation).
fn jackson_quoted(s: &str) -> Vec<u8> {
    let mut out = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{0C}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || (c as u32) > 0xFFFF => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04X}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out.into_bytes()
}

/// Strings dense in what the writer treats specially, at every alignment of its 8-byte steps.
fn escape_heavy() -> impl Strategy<Value = String> {
    let ch = prop_oneof![
        4 => proptest::char::range('a', 'z'),
        1 => proptest::sample::select(vec![
            '"', '\\', '/', '\u{0}', '\u{8}', '\t', '\n', '\u{b}', '\u{c}', '\r', '\u{1f}', ' ',
            '\u{7f}', '\u{80}', 'é', '€', '\u{ffff}', '\u{10000}', '😀', '\u{10ffff}',
        ]),
        1 => any::<char>(),
    ];
    proptest::collection::vec(ch, 0..70).prop_map(|v| v.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The JSON string writer (8 bytes at a time) writes exactly Jackson's escaping.
    #[test]
    fn json_string_writer_escapes_as_jackson(s in escape_heavy()) {
        let mut out = Vec::new();
        json::write_str(&mut out, &s);
        prop_assert_eq!(String::from_utf8(out).unwrap(), String::from_utf8(jackson_quoted(&s)).unwrap());
    }

    /// The JSON string writer's output is JSON that parses back to the input.
    #[test]
    fn json_string_writer_round_trips(s in any::<String>()) {
        let mut out = Vec::new();
        json::write_str(&mut out, &s);
        let back: String = serde_json::from_slice(&out).expect("valid JSON string");
        prop_assert_eq!(back, s);
    }

    /// Every converter reads arbitrary bytes without panicking; what it reads it writes again
    /// without panicking; ByteArrayConverter gives the bytes back, StringConverter in UTF-8 gives
    /// valid UTF-8 back unchanged, JsonConverter gives JSON that reads to the same value.
    #[test]
    fn converters_read_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200),
                                       json_text in "[\\[\\]{}\",:0-9a-z.eE+\\- ]{0,40}") {
        for c in converters() {
            for input in [&bytes[..], json_text.as_bytes()] {
                let Ok((schema, value)) = c.to_connect_data(Some(input)) else { continue };
                let written = c.from_connect_data(schema.as_deref(), &value);
                match &c {
                    Converter::ByteArray => {
                        prop_assert_eq!(written.expect("bytes write"), Some(input.to_vec()));
                    }
                    Converter::String { .. } if c == Converter::configure(STRING_CONVERTER, &BTreeMap::new(), false).unwrap() => {
                        if let Ok(text) = std::str::from_utf8(input) {
                            prop_assert_eq!(written.expect("string write"), Some(text.as_bytes().to_vec()));
                        }
                    }
                    Converter::Json(_) => {
                        if let Ok(Some(out)) = written {
                            let (s2, v2) = c.to_connect_data(Some(&out)).expect("own output reads back");
                            prop_assert_eq!(s2, schema);
                            // NaN never compares equal; everything else must.
                            if !format!("{value:?}").contains("NaN") {
                                prop_assert_eq!(v2, value);
                            }
                        }
                    }
                    _ => {}
                }
            }
            let _ = c.to_connect_data(None).expect("a Kafka null always reads");
        }
    }

    /// The record builder takes any event: no panic, the value is valid JSON (JsonConverter) or
    /// text (StringConverter), and the struct always validates against the toketi schema.
    #[test]
    fn record_builder_takes_any_event(ev in event()) {
        let st = to_struct(&ev);
        st.validate().expect("valid struct");
        let schema = iothub_value_schema();
        let value = Value::Struct(st);
        for c in converters() {
            if matches!(c, Converter::ByteArray) {
                continue;
            }
            let out = c.from_connect_data(Some(&schema), &value).expect("converts").expect("non-null");
            if let Converter::Json(j) = &c {
                let parsed: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
                let payload = if j.schemas_enable { &parsed["payload"] } else { &parsed };
                let f = fields(&ev);
                prop_assert_eq!(payload["deviceId"].as_str(), Some(f.device_id.as_str()));
                prop_assert_eq!(payload["content"].as_str(), Some(f.content.as_str()));
                prop_assert_eq!(payload["properties"].as_object().map(|m| m.len()), Some(f.properties.len()));
            }
        }
    }
}

/// 20,000 application properties (with repeats and nulls) through fields → struct → JSON in
/// under 10 ms (best of 5, so a busy machine does not decide it). Quadratic map handling takes
/// seconds here.
#[test]
fn record_builder_20000_properties_under_10ms() {
    let mut app = Vec::with_capacity(20_000);
    for i in 0..20_000u32 {
        let v = match i % 7 {
            0 => AmqpScalar::Null,
            1 => AmqpScalar::Int(i as i32),
            _ => AmqpScalar::String(format!("value-{i}")),
        };
        // every 10th key repeats an earlier one
        let k = if i % 10 == 9 { i / 2 } else { i };
        app.push((format!("prop-{k}"), v));
    }
    let ev = IotEvent {
        annotations: vec![(
            "iothub-connection-device-id".into(),
            AmqpScalar::String("d".into()),
        )],
        properties: vec![],
        application_properties: app,
        body: b"{}".to_vec(),
    };
    let schema: Arc<_> = iothub_value_schema();
    let c = Converter::json(false);
    let mut best = Duration::MAX;
    let mut len = 0;
    for _ in 0..5 {
        let ev = ev.clone();
        let t = Instant::now();
        let f = super::record::into_fields(ev);
        let out = c
            .from_connect_data(Some(&schema), &Value::Struct(f.into_struct()))
            .unwrap()
            .unwrap();
        best = best.min(t.elapsed());
        len = out.len();
    }
    assert!(len > 20_000 * 10);
    // 10 ms is the budget of an optimized build (`cargo test --release`); unoptimized test builds
    // run the same code about 20-30x slower (measured: ~180 ms), still far below the seconds a
    // quadratic map takes.
    let budget = if cfg!(debug_assertions) {
        Duration::from_millis(500)
    } else {
        Duration::from_millis(10)
    };
    assert!(
        best < budget,
        "20,000 properties took {best:?} (best of 5), budget {budget:?}"
    );
}

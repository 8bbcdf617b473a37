//! Golden bytes (verified against Kafka 3.2.0's converters) and behaviour of every converter.

use super::*;
use crate::connect::schema::Type;
use crate::connect::value::Struct;

fn string_map_schema() -> Arc<Schema> {
    Arc::new(Schema::map(
        Schema::of(Type::String),
        Schema::of(Type::String),
    ))
}

/// The generic example of kafka-connect.md §7.1/§7.3 (verified against Kafka 3.2.0).
fn telemetry() -> (Arc<Schema>, Value) {
    let schema = Arc::new(
        Schema::new(Type::Struct)
            .name("com.example.Telemetry")
            .version(1)
            .field("deviceId", Schema::of(Type::String))
            .field("sequenceNumber", Schema::of(Type::Int64))
            .field("contentType", Schema::optional_of(Type::String))
            .field("properties", string_map_schema())
            .field("body", Schema::of(Type::Bytes))
            .field("enqueuedTime", Arc::new(Schema::timestamp())),
    );
    let mut s = Struct::new(schema.clone());
    s.put("deviceId", Value::String("dev-01".into())).unwrap();
    s.put("sequenceNumber", Value::Int64(42)).unwrap();
    s.put(
        "properties",
        Value::string_map([("temperatureAlert", "true"), ("unit", "C")]),
    )
    .unwrap();
    s.put("body", Value::Bytes(b"hello".to_vec())).unwrap();
    s.put("enqueuedTime", Value::Int64(1_504_037_746_112))
        .unwrap();
    (schema, Value::Struct(s))
}

fn text(b: Option<Vec<u8>>) -> String {
    String::from_utf8(b.expect("non-null")).unwrap()
}

#[test]
fn golden_generic_json_with_and_without_schemas() {
    let (schema, value) = telemetry();
    let with = Converter::json(true)
        .from_connect_data(Some(&schema), &value)
        .unwrap();
    assert_eq!(
        text(with),
        r#"{"schema":{"type":"struct","fields":[{"type":"string","optional":false,"field":"deviceId"},{"type":"int64","optional":false,"field":"sequenceNumber"},{"type":"string","optional":true,"field":"contentType"},{"type":"map","keys":{"type":"string","optional":false},"values":{"type":"string","optional":false},"optional":false,"field":"properties"},{"type":"bytes","optional":false,"field":"body"},{"type":"int64","optional":false,"name":"org.apache.kafka.connect.data.Timestamp","version":1,"field":"enqueuedTime"}],"optional":false,"name":"com.example.Telemetry","version":1},"payload":{"deviceId":"dev-01","sequenceNumber":42,"contentType":null,"properties":{"temperatureAlert":"true","unit":"C"},"body":"aGVsbG8=","enqueuedTime":1504037746112}}"#
    );
    let without = Converter::json(false)
        .from_connect_data(Some(&schema), &value)
        .unwrap();
    assert_eq!(
        text(without),
        r#"{"deviceId":"dev-01","sequenceNumber":42,"contentType":null,"properties":{"temperatureAlert":"true","unit":"C"},"body":"aGVsbG8=","enqueuedTime":1504037746112}"#
    );
}

#[test]
fn golden_generic_string_converter() {
    let (schema, value) = telemetry();
    let out = text(
        Converter::String {
            encoding: JavaCharset::Utf8,
        }
        .from_connect_data(Some(&schema), &value)
        .unwrap(),
    );
    // Java prints byte[] as `[B@<identity hash>` (random); only that token may differ.
    let want_prefix = "Struct{deviceId=dev-01,sequenceNumber=42,properties={temperatureAlert=true, unit=C},body=[B@";
    let want_suffix = ",enqueuedTime=Tue Aug 29 20:15:46 UTC 2017}";
    assert!(out.starts_with(want_prefix), "{out}");
    assert!(out.ends_with(want_suffix), "{out}");
    let token = &out[want_prefix.len()..out.len() - want_suffix.len()];
    assert!(
        !token.is_empty() && token.chars().all(|c| c.is_ascii_hexdigit()),
        "{token}"
    );
}

#[test]
fn golden_string_keys() {
    let s = Schema::of(Type::String);
    let v = Value::String("dev-01".into());
    assert_eq!(
        text(
            Converter::json(true)
                .from_connect_data(Some(&s), &v)
                .unwrap()
        ),
        r#"{"schema":{"type":"string","optional":false},"payload":"dev-01"}"#
    );
    assert_eq!(
        text(
            Converter::json(false)
                .from_connect_data(Some(&s), &v)
                .unwrap()
        ),
        r#""dev-01""#
    );
    let string = Converter::String {
        encoding: JavaCharset::Utf8,
    };
    assert_eq!(
        text(string.from_connect_data(Some(&s), &v).unwrap()),
        "dev-01"
    );
}

#[test]
fn nulls() {
    for c in [
        Converter::json(true),
        Converter::json(false),
        Converter::String {
            encoding: JavaCharset::Utf8,
        },
        Converter::ByteArray,
    ] {
        assert_eq!(
            c.from_connect_data(None, &Value::Null).unwrap(),
            None,
            "{c:?}"
        );
    }
    let opt = Schema::optional_of(Type::String);
    assert_eq!(
        text(
            Converter::json(true)
                .from_connect_data(Some(&opt), &Value::Null)
                .unwrap()
        ),
        r#"{"schema":{"type":"string","optional":true},"payload":null}"#
    );
    assert_eq!(
        text(
            Converter::json(false)
                .from_connect_data(Some(&opt), &Value::Null)
                .unwrap()
        ),
        "null"
    );
    let req = Schema::of(Type::String);
    assert_eq!(
        Converter::json(false)
            .from_connect_data(Some(&req), &Value::Null)
            .unwrap_err()
            .to_string(),
        "Conversion error: null value for field that is required and has no default value"
    );
    let with_default = Schema::new(Type::Int32)
        .optional()
        .default_value(Value::Int32(7));
    assert_eq!(
        text(
            Converter::json(true)
                .from_connect_data(Some(&with_default), &Value::Null)
                .unwrap()
        ),
        r#"{"schema":{"type":"int32","optional":true,"default":7},"payload":7}"#
    );
    let no_replace = Converter::Json(JsonConverter::new(
        false,
        DecimalFormat::Base64,
        false,
        JsonConverter::DEFAULT_CACHE_SIZE,
    ));
    assert_eq!(
        text(
            no_replace
                .from_connect_data(Some(&with_default), &Value::Null)
                .unwrap()
        ),
        "null"
    );
}

#[test]
fn schemaless_values_and_offsets_shapes() {
    let key = Value::Array(vec![
        Value::String("AzureIotHubConnector".into()),
        Value::string_map([
            ("EventHubName", "iothub-ehub-myhub"),
            ("EventHubPartition", "0"),
        ]),
    ]);
    assert_eq!(
        text(
            Converter::json(false)
                .from_connect_data(None, &key)
                .unwrap()
        ),
        r#"["AzureIotHubConnector",{"EventHubName":"iothub-ehub-myhub","EventHubPartition":"0"}]"#
    );
    let mixed = Value::Map(vec![
        (
            Value::String("position".into()),
            Value::Int64(1_234_567_890_123),
        ),
        (Value::String("i".into()), Value::Int32(7)),
        (Value::String("f".into()), Value::Float64(1.5)),
        (Value::String("b".into()), Value::Boolean(true)),
        (Value::String("s".into()), Value::String("x".into())),
        (Value::String("n".into()), Value::Null),
    ]);
    assert_eq!(
        text(
            Converter::json(false)
                .from_connect_data(None, &mixed)
                .unwrap()
        ),
        r#"{"position":1234567890123,"i":7,"f":1.5,"b":true,"s":"x","n":null}"#
    );
    assert_eq!(
        text(
            Converter::json(true)
                .from_connect_data(None, &mixed)
                .unwrap()
        ),
        r#"{"schema":null,"payload":{"position":1234567890123,"i":7,"f":1.5,"b":true,"s":"x","n":null}}"#
    );
    let int_keys = Value::Map(vec![(Value::Int32(1), Value::String("a".into()))]);
    assert_eq!(
        text(
            Converter::json(false)
                .from_connect_data(None, &int_keys)
                .unwrap()
        ),
        r#"[[1,"a"]]"#
    );
    let (schema, value) = telemetry();
    let _ = schema;
    assert_eq!(
        Converter::json(false)
            .from_connect_data(None, &value)
            .unwrap_err()
            .to_string(),
        "Mismatching schema."
    );
}

#[test]
fn schema_json_key_order_with_doc_parameters_and_arrays() {
    let s = Schema::array(Arc::new(Schema::decimal(2)))
        .optional()
        .name("n")
        .version(3)
        .doc("d")
        .parameter("p", "v");
    let v = Value::Array(vec![Value::Bytes(vec![0x04, 0xd2])]);
    assert_eq!(
        text(
            Converter::json(true)
                .from_connect_data(Some(&s), &v)
                .unwrap()
        ),
        r#"{"schema":{"type":"array","items":{"type":"bytes","optional":false,"name":"org.apache.kafka.connect.data.Decimal","version":1,"parameters":{"scale":"2"}},"optional":true,"name":"n","version":3,"doc":"d","parameters":{"p":"v"}},"payload":["BNI="]}"#
    );
    let numeric = Converter::Json(JsonConverter::new(
        false,
        DecimalFormat::Numeric,
        true,
        JsonConverter::DEFAULT_CACHE_SIZE,
    ));
    assert_eq!(
        text(numeric.from_connect_data(Some(&s), &v).unwrap()),
        "[12.34]"
    );
}

#[test]
fn type_mismatch_errors() {
    let s = Schema::of(Type::String);
    assert_eq!(
        Converter::json(true)
            .from_connect_data(Some(&s), &Value::Int32(1))
            .unwrap_err()
            .to_string(),
        "Invalid type for STRING: class java.lang.Integer"
    );
}

#[test]
fn byte_array_converter() {
    let (schema, value) = telemetry();
    let c = Converter::ByteArray;
    assert_eq!(
        c.from_connect_data(Some(&schema), &value)
            .unwrap_err()
            .to_string(),
        "Invalid schema type for ByteArrayConverter: STRUCT"
    );
    assert!(c.check_schema(Some(&schema)).is_err());
    assert!(c.check_schema(None).is_ok());
    assert_eq!(
        c.from_connect_data(None, &Value::String("x".into()))
            .unwrap_err()
            .to_string(),
        "ByteArrayConverter is not compatible with objects of type class java.lang.String"
    );
    assert_eq!(
        c.from_connect_data(Some(&Schema::new(Type::Bytes)), &Value::Bytes(vec![1, 2]))
            .unwrap(),
        Some(vec![1, 2])
    );
    let (s, v) = c.to_connect_data(Some(&[0xff, 0])).unwrap();
    assert_eq!(s.unwrap().schema_type, Type::Bytes);
    assert_eq!(v, Value::Bytes(vec![0xff, 0]));
    let (s, v) = c.to_connect_data(None).unwrap();
    assert!(s.unwrap().optional);
    assert_eq!(v, Value::Null);
}

#[test]
fn configure_by_class_name() {
    let mut props = BTreeMap::new();
    assert_eq!(
        Converter::configure(JSON_CONVERTER, &props, false).unwrap(),
        Converter::json(true)
    );
    props.insert("schemas.enable".into(), " FALSE ".into());
    assert_eq!(
        Converter::configure(JSON_CONVERTER, &props, false).unwrap(),
        Converter::json(false)
    );
    props.insert("schemas.enable".into(), "nope".into());
    assert!(Converter::configure(JSON_CONVERTER, &props, true)
        .unwrap_err()
        .contains("schemas.enable"));
    assert_eq!(
        Converter::configure(STRING_CONVERTER, &BTreeMap::new(), false).unwrap(),
        Converter::String {
            encoding: JavaCharset::Utf8
        }
    );
    let mut enc = BTreeMap::new();
    enc.insert("converter.encoding".to_string(), "ISO-8859-1".to_string());
    assert_eq!(
        Converter::configure(STRING_CONVERTER, &enc, false).unwrap(),
        Converter::String {
            encoding: JavaCharset::Latin1
        }
    );
    enc.insert("converter.encoding".to_string(), "klingon".to_string());
    assert!(Converter::configure(STRING_CONVERTER, &enc, false).is_err());
    assert_eq!(
        Converter::configure(BYTE_ARRAY_CONVERTER, &BTreeMap::new(), true).unwrap(),
        Converter::ByteArray
    );
    let err = Converter::configure(
        "io.confluent.connect.avro.AvroConverter",
        &BTreeMap::new(),
        true,
    )
    .unwrap_err();
    assert!(
        err.contains("io.confluent.connect.avro.AvroConverter"),
        "{err}"
    );
    assert!(err.contains("key.converter"), "{err}");
}

#[test]
fn json_round_trip_with_schema() {
    let (schema, value) = telemetry();
    let c = Converter::json(true);
    let bytes = c.from_connect_data(Some(&schema), &value).unwrap().unwrap();
    let (s2, v2) = c.to_connect_data(Some(&bytes)).unwrap();
    assert_eq!(s2.as_deref(), Some(&*schema));
    assert_eq!(v2, value);
    let again = c.from_connect_data(s2.as_deref(), &v2).unwrap().unwrap();
    assert_eq!(again, bytes);
}

#[test]
fn json_to_connect_schemaless_and_errors() {
    let c = Converter::json(false);
    let (s, v) = c
        .to_connect_data(Some(br#"{"a":1,"b":[1.5,"x",null,true]}"#))
        .unwrap();
    assert!(s.is_none());
    assert_eq!(
        v,
        Value::Map(vec![
            (Value::String("a".into()), Value::Int64(1)),
            (
                Value::String("b".into()),
                Value::Array(vec![
                    Value::Float64(1.5),
                    Value::String("x".into()),
                    Value::Null,
                    Value::Boolean(true)
                ])
            ),
        ])
    );
    assert_eq!(c.to_connect_data(None).unwrap(), (None, Value::Null));
    let with = Converter::json(true);
    let err = with
        .to_connect_data(Some(br#"{"a":1}"#))
        .unwrap_err()
        .to_string();
    assert!(err.contains("requires \"schema\" and \"payload\""), "{err}");
    let err = with
        .to_connect_data(Some(b"{nope"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("Converting byte[] to Kafka Connect data failed"),
        "{err}"
    );
    let (s, v) = with
        .to_connect_data(Some(br#"{"schema":null,"payload":"x"}"#))
        .unwrap();
    assert!(s.is_none());
    assert_eq!(v, Value::String("x".into()));
    let (s, v) = with
        .to_connect_data(Some(
            br#"{"schema":{"type":"string","optional":false},"payload":"x"}"#,
        ))
        .unwrap();
    assert_eq!(s.unwrap().schema_type, Type::String);
    assert_eq!(v, Value::String("x".into()));
    let err = with
        .to_connect_data(Some(
            br#"{"schema":{"type":"string","optional":false},"payload":null}"#,
        ))
        .unwrap_err()
        .to_string();
    assert_eq!(err, "Invalid null value for required STRING field");
    let err = with
        .to_connect_data(Some(
            br#"{"schema":{"type":"int32","optional":false},"payload":"x"}"#,
        ))
        .unwrap_err()
        .to_string();
    assert!(err.contains("INT32"), "{err}");
}

#[test]
fn c2d_struct_from_json_envelope() {
    let bytes = br#"{"schema":{"type":"struct","fields":[{"type":"string","optional":false,"field":"deviceId"},{"type":"string","optional":false,"field":"message"},{"type":"string","optional":false,"field":"messageId"},{"type":"string","optional":true,"field":"expiry"}],"optional":false,"name":"iothub.kafka.connect.cloud2device.message","version":1},"payload":{"deviceId":"d1","message":"Turn On","messageId":"m1"}}"#;
    let (s, v) = Converter::json(true).to_connect_data(Some(bytes)).unwrap();
    let s = s.unwrap();
    assert_eq!(
        s.name.as_deref(),
        Some("iothub.kafka.connect.cloud2device.message")
    );
    let Value::Struct(st) = v else {
        panic!("expected a struct")
    };
    assert_eq!(st.get("deviceId"), Some(&Value::String("d1".into())));
    assert_eq!(st.get("expiry"), Some(&Value::Null));
}

#[test]
fn string_converter_reads_and_encodings() {
    let c = Converter::String {
        encoding: JavaCharset::Utf8,
    };
    let (s, v) = c.to_connect_data(Some(b"ab\xffc")).unwrap();
    assert!(s.unwrap().optional);
    assert_eq!(v, Value::String("ab\u{FFFD}c".into()));
    assert_eq!(c.to_connect_data(None).unwrap().1, Value::Null);

    assert_eq!(JavaCharset::UsAscii.encode("aé😀"), b"a??");
    assert_eq!(JavaCharset::Latin1.encode("aé😀"), b"a\xe9?");
    assert_eq!(JavaCharset::Utf16.encode("a"), vec![0xFE, 0xFF, 0, 0x61]);
    assert_eq!(JavaCharset::Utf16Le.encode("a"), vec![0x61, 0]);
    assert_eq!(JavaCharset::Utf16.decode(&[0xFF, 0xFE, 0x61, 0]), "a");
    assert_eq!(JavaCharset::Utf16.decode(&[0, 0x61, 0]), "a\u{FFFD}");
    assert_eq!(JavaCharset::UsAscii.decode(b"a\x80"), "a\u{FFFD}");
    assert_eq!(JavaCharset::Latin1.decode(b"\xe9"), "é");
    let sjis = JavaCharset::for_name("Shift_JIS").unwrap();
    assert_eq!(sjis.decode(&sjis.encode("日本")), "日本");
    assert_eq!(sjis.encode("a\u{1F511}"), b"a?");
}

//! `org.apache.kafka.connect.json.JsonConverter`, writing side (`fromConnectData`): the
//! `{"schema":…,"payload":…}` envelope (`schemas.enable=true`) or the bare payload, byte-identical
//! with Kafka's converter and Jackson's `ObjectMapper` (key order, number and string rendering,
//! base64 bytes, `decimal.format`, `replace.null.with.default`). Reading is in `json_read.rs`.
//!
//! Each converter instance has its own schema cache (Java's `fromConnectSchemaCache`): the JSON of
//! a schema is rendered once and reused for every equal schema (compared by value, the same object
//! first); the cache holds the most recently used schemas, at most `schemas.cache.size` and never
//! more than [`MAX_CACHED_SCHEMAS`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::connect::java;
use crate::connect::json;
use crate::connect::schema::{Schema, Type, DECIMAL_LOGICAL_NAME, DECIMAL_SCALE_PARAMETER};
use crate::connect::value::{DataError, Value};

use super::json_read::{as_connect_schema, convert_to_connect};
use super::ConvertError;

/// Upper bound of the schema cache (entries are found by a linear scan).
pub const MAX_CACHED_SCHEMAS: usize = 32;

/// `decimal.format` of JsonConverter (2.4+).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecimalFormat {
    /// Decimals as base64 of the unscaled bytes (the default).
    Base64,
    /// Decimals as JSON numbers written with `BigDecimal.toString()`.
    Numeric,
}

/// Rendered schema JSON of one converter instance, most recently used first.
#[derive(Debug, Default)]
struct SchemaCache {
    capacity: usize,
    entries: Mutex<Vec<(Schema, Arc<[u8]>)>>,
}

impl SchemaCache {
    fn new(capacity: usize) -> SchemaCache {
        SchemaCache {
            capacity: capacity.min(MAX_CACHED_SCHEMAS),
            entries: Mutex::new(Vec::new()),
        }
    }

    /// Appends the JSON of `s` to `out`, rendering it with `render` when it is not cached.
    fn write(
        &self,
        out: &mut Vec<u8>,
        s: &Schema,
        render: impl FnOnce(&mut Vec<u8>) -> Result<(), ConvertError>,
    ) -> Result<(), ConvertError> {
        if self.capacity == 0 {
            return render(out);
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = entries.iter().position(|(k, _)| k == s) {
            out.extend_from_slice(&entries[i].1);
            if i > 0 {
                let e = entries.remove(i);
                entries.insert(0, e);
            }
            return Ok(());
        }
        drop(entries);
        let start = out.len();
        render(out)?;
        let rendered: Arc<[u8]> = Arc::from(&out[start..]);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.insert(0, (s.clone(), rendered));
        entries.truncate(self.capacity);
        Ok(())
    }
}

/// A configured JsonConverter.
#[derive(Debug)]
pub struct JsonConverter {
    /// `schemas.enable` (default true): write/read the `{"schema":…,"payload":…}` envelope.
    pub schemas_enable: bool,
    pub decimal_format: DecimalFormat,
    /// `replace.null.with.default` (default true, 3.5+ semantics; older workers always replaced).
    pub replace_null_with_default: bool,
    cache: SchemaCache,
    /// Length of the last output: the next buffer starts that large (no regrowth per record).
    size_hint: AtomicUsize,
}

impl JsonConverter {
    /// `schemas.cache.size` default.
    pub const DEFAULT_CACHE_SIZE: usize = 1000;

    pub fn new(
        schemas_enable: bool,
        decimal_format: DecimalFormat,
        replace_null_with_default: bool,
        cache_size: usize,
    ) -> JsonConverter {
        JsonConverter {
            schemas_enable,
            decimal_format,
            replace_null_with_default,
            cache: SchemaCache::new(cache_size),
            size_hint: AtomicUsize::new(256),
        }
    }

    fn cache_size(&self) -> usize {
        self.cache.capacity
    }

    /// `fromConnectData(topic, schema, value)`. `Ok(None)` is a Kafka null.
    pub fn from_connect_data(
        &self,
        schema: Option<&Schema>,
        value: &Value,
    ) -> Result<Option<Vec<u8>>, ConvertError> {
        if schema.is_none() && value.is_null() {
            return Ok(None);
        }
        let w = JsonWriter {
            decimal_format: self.decimal_format,
            replace_null_with_default: self.replace_null_with_default,
        };
        let mut out = Vec::with_capacity(self.size_hint.load(Ordering::Relaxed) + 64);
        if self.schemas_enable {
            out.extend_from_slice(b"{\"schema\":");
            match schema {
                Some(s) => self.cache.write(&mut out, s, |o| w.write_schema(o, s))?,
                None => json::write_null(&mut out),
            }
            out.extend_from_slice(b",\"payload\":");
            w.write_value(&mut out, schema, value)?;
            out.push(b'}');
        } else {
            w.write_value(&mut out, schema, value)?;
        }
        self.size_hint.store(out.len(), Ordering::Relaxed);
        Ok(Some(out))
    }

    /// [`JsonConverter::from_connect_data`] of a value of `schema` whose payload JSON `payload`
    /// writes directly (a caller's fast path; it must write what `write_value` would). The envelope
    /// (`schemas.enable`), the schema cache and the buffer sizing are the converter's own.
    pub fn write_direct(
        &self,
        schema: &Schema,
        payload: impl FnOnce(&mut Vec<u8>),
    ) -> Result<Vec<u8>, ConvertError> {
        let mut out = Vec::with_capacity(self.size_hint.load(Ordering::Relaxed) + 64);
        if self.schemas_enable {
            let w = JsonWriter {
                decimal_format: self.decimal_format,
                replace_null_with_default: self.replace_null_with_default,
            };
            out.extend_from_slice(b"{\"schema\":");
            self.cache
                .write(&mut out, schema, |o| w.write_schema(o, schema))?;
            out.extend_from_slice(b",\"payload\":");
            payload(&mut out);
            out.push(b'}');
        } else {
            payload(&mut out);
        }
        self.size_hint.store(out.len(), Ordering::Relaxed);
        Ok(out)
    }

    /// `toConnectData(topic, bytes)`. `None` bytes are a Kafka null.
    pub fn to_connect_data(
        &self,
        bytes: Option<&[u8]>,
    ) -> Result<(Option<Arc<Schema>>, Value), ConvertError> {
        let Some(bytes) = bytes else {
            return Ok((None, Value::Null));
        };
        let parsed: serde_json::Value = if bytes.iter().all(u8::is_ascii_whitespace) {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(bytes).map_err(|e| {
                DataError::new(format!(
                    "Converting byte[] to Kafka Connect data failed due to serialization error: {e}"
                ))
            })?
        };
        if self.schemas_enable {
            let envelope = match &parsed {
                serde_json::Value::Object(m)
                    if m.len() == 2 && m.contains_key("schema") && m.contains_key("payload") =>
                {
                    m
                }
                _ => {
                    return Err(DataError::new(
                        "JsonConverter with schemas.enable requires \"schema\" and \"payload\" fields and may not contain additional fields. If you are trying to deserialize plain JSON data, set schemas.enable=false in your converter configuration.",
                    ))
                }
            };
            let schema = as_connect_schema(&envelope["schema"])?.map(Arc::new);
            let value = convert_to_connect(schema.as_deref(), &envelope["payload"])?;
            Ok((schema, value))
        } else {
            Ok((None, convert_to_connect(None, &parsed)?))
        }
    }
}

/// A copy has the same settings and an empty cache.
impl Clone for JsonConverter {
    fn clone(&self) -> JsonConverter {
        JsonConverter::new(
            self.schemas_enable,
            self.decimal_format,
            self.replace_null_with_default,
            self.cache_size(),
        )
    }
}

/// Equal settings (the cache's contents are not part of a converter's identity).
impl PartialEq for JsonConverter {
    fn eq(&self, other: &JsonConverter) -> bool {
        self.schemas_enable == other.schemas_enable
            && self.decimal_format == other.decimal_format
            && self.replace_null_with_default == other.replace_null_with_default
    }
}

struct JsonWriter {
    decimal_format: DecimalFormat,
    replace_null_with_default: bool,
}

impl JsonWriter {
    /// `JsonConverter.asJsonSchema`: `type`, then `items` | `keys`,`values` | `fields`, then
    /// `optional`, `name`, `version`, `doc`, `parameters`, `default` (each only when set).
    fn write_schema(&self, out: &mut Vec<u8>, s: &Schema) -> Result<(), ConvertError> {
        self.write_schema_with_field(out, s, None)
    }

    fn write_schema_with_field(
        &self,
        out: &mut Vec<u8>,
        s: &Schema,
        field_name: Option<&str>,
    ) -> Result<(), ConvertError> {
        out.extend_from_slice(b"{\"type\":");
        json::write_str(out, s.schema_type.json_name());
        match s.schema_type {
            Type::Array => {
                out.extend_from_slice(b",\"items\":");
                let items = s
                    .value_schema
                    .as_deref()
                    .ok_or_else(|| DataError::new("Array schema has no element schema"))?;
                self.write_schema(out, items)?;
            }
            Type::Map => {
                let (k, v) = match (s.key_schema.as_deref(), s.value_schema.as_deref()) {
                    (Some(k), Some(v)) => (k, v),
                    _ => return Err(DataError::new("Map schema has no key or value schema")),
                };
                out.extend_from_slice(b",\"keys\":");
                self.write_schema(out, k)?;
                out.extend_from_slice(b",\"values\":");
                self.write_schema(out, v)?;
            }
            Type::Struct => {
                out.extend_from_slice(b",\"fields\":[");
                for (i, f) in s.fields.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    self.write_schema_with_field(out, &f.schema, Some(&f.name))?;
                }
                out.push(b']');
            }
            _ => {}
        }
        out.extend_from_slice(b",\"optional\":");
        json::write_bool(out, s.optional);
        if let Some(name) = &s.name {
            out.extend_from_slice(b",\"name\":");
            json::write_str(out, name);
        }
        if let Some(version) = s.version {
            out.extend_from_slice(b",\"version\":");
            json::write_i64(out, i64::from(version));
        }
        if let Some(doc) = &s.doc {
            out.extend_from_slice(b",\"doc\":");
            json::write_str(out, doc);
        }
        if let Some(params) = &s.parameters {
            out.extend_from_slice(b",\"parameters\":");
            let params: Vec<(&str, &String)> =
                params.iter().map(|(k, v)| (k.as_str(), v)).collect();
            json::write_str_object(
                out,
                dedupe_keys(params)
                    .into_iter()
                    .map(|(k, v)| (k, v.as_str())),
            );
        }
        if let Some(default) = &s.default_value {
            out.extend_from_slice(b",\"default\":");
            self.write_value(out, Some(s), default)?;
        }
        if let Some(f) = field_name {
            out.extend_from_slice(b",\"field\":");
            json::write_str(out, f);
        }
        out.push(b'}');
        Ok(())
    }

    /// `JsonConverter.convertToJson(schema, value)`.
    fn write_value(
        &self,
        out: &mut Vec<u8>,
        schema: Option<&Schema>,
        value: &Value,
    ) -> Result<(), ConvertError> {
        if value.is_null() {
            match schema {
                None => json::write_null(out),
                Some(s) => match &s.default_value {
                    Some(d) if self.replace_null_with_default => self.write_value(out, schema, d)?,
                    _ if s.optional => json::write_null(out),
                    _ => {
                        return Err(DataError::new(
                            "Conversion error: null value for field that is required and has no default value",
                        ))
                    }
                },
            }
            return Ok(());
        }
        let invalid = || {
            DataError::new(format!(
                "Invalid type for {}: {}",
                schema
                    .map(|s| s.schema_type.java_name())
                    .unwrap_or("unknown schema"),
                value.java_class()
            ))
        };
        if let Some(s) = schema {
            if value.inferred_type() != Some(s.schema_type) {
                return Err(invalid());
            }
            if let (Some(DECIMAL_LOGICAL_NAME), Value::Bytes(b), DecimalFormat::Numeric) =
                (s.name.as_deref(), value, self.decimal_format)
            {
                let scale = s
                    .parameter_value(DECIMAL_SCALE_PARAMETER)
                    .and_then(|p| p.parse::<i32>().ok())
                    .ok_or_else(|| {
                        DataError::new("Invalid Decimal schema: scale parameter not found.")
                    })?;
                let text = java::big_decimal_to_string(b, scale).ok_or_else(|| {
                    DataError::new("Decimal values wider than 128 bits are not supported")
                })?;
                out.extend_from_slice(text.as_bytes());
                return Ok(());
            }
        }
        match value {
            Value::Null => unreachable!("handled above"),
            Value::Boolean(b) => json::write_bool(out, *b),
            Value::Int8(v) => json::write_i64(out, i64::from(*v)),
            Value::Int16(v) => json::write_i64(out, i64::from(*v)),
            Value::Int32(v) => json::write_i64(out, i64::from(*v)),
            Value::Int64(v) => json::write_i64(out, *v),
            Value::Float32(v) => json::write_f32(out, *v),
            Value::Float64(v) => json::write_f64(out, *v),
            Value::String(s) => json::write_str(out, s),
            Value::Bytes(b) => json::write_base64(out, b),
            Value::Array(items) => {
                let item_schema = schema.and_then(|s| s.value_schema.as_deref());
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    self.write_value(out, item_schema, item)?;
                }
                out.push(b']');
            }
            Value::Map(entries) => {
                let key_schema = schema.and_then(|s| s.key_schema.as_deref());
                let value_schema = schema.and_then(|s| s.value_schema.as_deref());
                let object_mode = match schema {
                    Some(_) => key_schema.map(|k| k.schema_type) == Some(Type::String),
                    None => entries.iter().all(|(k, _)| matches!(k, Value::String(_))),
                };
                if object_mode {
                    // Jackson's ObjectNode: a repeated key keeps its first position, last value.
                    let mut keyed: Vec<(&str, &Value)> = Vec::with_capacity(entries.len());
                    for (k, v) in entries {
                        match k {
                            Value::String(s) => keyed.push((s.as_str(), v)),
                            other => {
                                return Err(DataError::new(format!(
                                    "Invalid type for STRING: {}",
                                    other.java_class()
                                )))
                            }
                        }
                    }
                    out.push(b'{');
                    for (i, (k, v)) in dedupe_keys(keyed).into_iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        json::write_str(out, k);
                        out.push(b':');
                        self.write_value(out, value_schema, v)?;
                    }
                    out.push(b'}');
                } else {
                    out.push(b'[');
                    for (i, (k, v)) in entries.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        out.push(b'[');
                        self.write_value(out, key_schema, k)?;
                        out.push(b',');
                        self.write_value(out, value_schema, v)?;
                        out.push(b']');
                    }
                    out.push(b']');
                }
            }
            Value::Struct(st) => {
                let s = match schema {
                    // Same schema object (the usual case): no deep comparison.
                    Some(s) if std::ptr::eq(&**st.schema(), s) || **st.schema() == *s => s,
                    _ => return Err(DataError::new("Mismatching schema.")),
                };
                out.push(b'{');
                for (i, f) in s.fields.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    json::write_str(out, &f.name);
                    out.push(b':');
                    let v = if self.replace_null_with_default {
                        st.get_by_index(f.index)
                    } else {
                        st.get_without_default(&f.name).unwrap_or(&Value::Null)
                    };
                    self.write_value(out, Some(&f.schema), v)?;
                }
                out.push(b'}');
            }
        }
        Ok(())
    }
}

/// Keeps the first position of each key and the last value written for it (LinkedHashMap put).
/// Small maps (the usual property maps) are scanned; larger ones use a hash index.
fn dedupe_keys<'a, V>(entries: Vec<(&'a str, V)>) -> Vec<(&'a str, V)> {
    const SCAN: usize = 16;
    let mut out: Vec<(&'a str, V)> = Vec::with_capacity(entries.len());
    if entries.len() <= SCAN {
        for (k, v) in entries {
            match out.iter_mut().find(|(ok, _)| *ok == k) {
                Some(slot) => slot.1 = v,
                None => out.push((k, v)),
            }
        }
        return out;
    }
    let mut index: HashMap<&'a str, usize> = HashMap::with_capacity(entries.len());
    for (k, v) in entries {
        match index.get(k) {
            Some(&i) => out[i].1 = v,
            None => {
                index.insert(k, out.len());
                out.push((k, v));
            }
        }
    }
    out
}

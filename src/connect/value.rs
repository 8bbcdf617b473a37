//! Connect values (`Object`s in Java) and `Struct`, with Java's `toString()` rendering used by
//! `StringConverter`.

use std::fmt;
use std::sync::Arc;

use super::java;
use super::schema::{
    Schema, Type, DATE_LOGICAL_NAME, DECIMAL_LOGICAL_NAME, DECIMAL_SCALE_PARAMETER,
    TIMESTAMP_LOGICAL_NAME, TIME_LOGICAL_NAME,
};

/// Connect's `DataException`: a value does not fit a schema or cannot be converted. The message
/// follows the Java text where one exists.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DataError(pub String);

impl DataError {
    pub fn new(msg: impl Into<String>) -> DataError {
        DataError(msg.into())
    }
}

/// A Connect value. Maps keep their iteration order (the order the Java map instance would
/// iterate in is the producer's business; we keep insertion order).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Boolean(bool),
    Int8(i8),
    Int16(i16),
    Int32(i32),
    Int64(i64),
    Float32(f32),
    Float64(f64),
    String(String),
    Bytes(Vec<u8>),
    Array(Vec<Value>),
    Map(Vec<(Value, Value)>),
    Struct(Struct),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// A `Map<String,String>` value from string pairs.
    pub fn string_map<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Value {
        Value::Map(
            pairs
                .into_iter()
                .map(|(k, v)| (Value::String(k.into()), Value::String(v.into())))
                .collect(),
        )
    }

    /// The schema type this value's Java class maps to (`ConnectSchema.schemaType(Class)`);
    /// `None` for null.
    pub fn inferred_type(&self) -> Option<Type> {
        Some(match self {
            Value::Null => return None,
            Value::Boolean(_) => Type::Boolean,
            Value::Int8(_) => Type::Int8,
            Value::Int16(_) => Type::Int16,
            Value::Int32(_) => Type::Int32,
            Value::Int64(_) => Type::Int64,
            Value::Float32(_) => Type::Float32,
            Value::Float64(_) => Type::Float64,
            Value::String(_) => Type::String,
            Value::Bytes(_) => Type::Bytes,
            Value::Array(_) => Type::Array,
            Value::Map(_) => Type::Map,
            Value::Struct(_) => Type::Struct,
        })
    }

    /// The Java class the value would have, as `getClass().toString()` prints it (for messages).
    pub fn java_class(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Boolean(_) => "class java.lang.Boolean",
            Value::Int8(_) => "class java.lang.Byte",
            Value::Int16(_) => "class java.lang.Short",
            Value::Int32(_) => "class java.lang.Integer",
            Value::Int64(_) => "class java.lang.Long",
            Value::Float32(_) => "class java.lang.Float",
            Value::Float64(_) => "class java.lang.Double",
            Value::String(_) => "class java.lang.String",
            Value::Bytes(_) => "class [B",
            Value::Array(_) => "class java.util.ArrayList",
            Value::Map(_) => "class java.util.HashMap",
            Value::Struct(_) => "class org.apache.kafka.connect.data.Struct",
        }
    }

    /// Java `String.valueOf(value)` as `Struct.toString()` and `StringConverter` produce it.
    /// `schema` (when known) selects the logical-type rendering: Timestamp/Date/Time values are
    /// `java.util.Date`s in Java and print as `Tue Aug 29 20:15:46 UTC 2017` (JVM zone UTC);
    /// Decimals print as `BigDecimal.toString()`.
    ///
    /// `byte[]` prints in Java as `[B@<identity hash hex>`, a random token; we print the same shape
    /// with a content hash (`Arrays.hashCode`), so the text is deterministic but just as
    /// meaningless. Use JsonConverter or ByteArrayConverter for bytes.
    pub fn to_java_string(&self, schema: Option<&Schema>) -> String {
        let mut out = String::new();
        self.write_java(schema, &mut out);
        out
    }

    fn write_java(&self, schema: Option<&Schema>, out: &mut String) {
        let logical = schema.and_then(|s| s.name.as_deref());
        match self {
            Value::Null => out.push_str("null"),
            Value::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int8(v) => out.push_str(&v.to_string()),
            Value::Int16(v) => out.push_str(&v.to_string()),
            Value::Int32(v) => match logical {
                Some(DATE_LOGICAL_NAME) => {
                    out.push_str(&java::date_to_string(i64::from(*v) * 86_400_000))
                }
                Some(TIME_LOGICAL_NAME) => out.push_str(&java::date_to_string(i64::from(*v))),
                _ => out.push_str(&v.to_string()),
            },
            Value::Int64(v) => match logical {
                Some(TIMESTAMP_LOGICAL_NAME) => out.push_str(&java::date_to_string(*v)),
                _ => out.push_str(&v.to_string()),
            },
            Value::Float32(v) => out.push_str(&java::float_to_string(*v)),
            Value::Float64(v) => out.push_str(&java::double_to_string(*v)),
            Value::String(s) => out.push_str(s),
            Value::Bytes(b) => {
                let decimal = match (logical, schema) {
                    (Some(DECIMAL_LOGICAL_NAME), Some(s)) => s
                        .parameter_value(DECIMAL_SCALE_PARAMETER)
                        .and_then(|p| p.parse::<i32>().ok())
                        .and_then(|scale| java::big_decimal_to_string(b, scale)),
                    _ => None,
                };
                match decimal {
                    Some(d) => out.push_str(&d),
                    None => {
                        let h = b.iter().fold(1i32, |h, x| {
                            h.wrapping_mul(31).wrapping_add(i32::from(*x as i8))
                        });
                        out.push_str(&format!("[B@{:x}", h & 0x7fff_ffff));
                    }
                }
            }
            Value::Array(items) => {
                let item_schema = schema.and_then(|s| s.value_schema.as_deref());
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.write_java(item_schema, out);
                }
                out.push(']');
            }
            Value::Map(entries) => {
                let key_schema = schema.and_then(|s| s.key_schema.as_deref());
                let value_schema = schema.and_then(|s| s.value_schema.as_deref());
                out.push('{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    k.write_java(key_schema, out);
                    out.push('=');
                    v.write_java(value_schema, out);
                }
                out.push('}');
            }
            Value::Struct(s) => s.write_java(out),
        }
    }
}

/// `org.apache.kafka.connect.data.Struct`: a schema plus one value per field (Null = unset).
#[derive(Clone, Debug, PartialEq)]
pub struct Struct {
    schema: Arc<Schema>,
    values: Vec<Value>,
}

impl Struct {
    /// An empty struct (every field null). Panics if `schema` is not a struct schema, as Java's
    /// constructor throws.
    pub fn new(schema: Arc<Schema>) -> Struct {
        assert_eq!(
            schema.schema_type,
            Type::Struct,
            "Not a struct schema: {schema:?}"
        );
        let values = vec![Value::Null; schema.fields.len()];
        Struct { schema, values }
    }

    /// A struct with every field set at once (`values` in field order), each value validated as
    /// [`Struct::put`] validates it.
    pub fn from_values(schema: Arc<Schema>, values: Vec<Value>) -> Result<Struct, DataError> {
        if schema.schema_type != Type::Struct || values.len() != schema.fields.len() {
            return Err(DataError::new(format!(
                "{} values for a schema with {} fields",
                values.len(),
                schema.fields.len()
            )));
        }
        for (f, v) in schema.fields.iter().zip(&values) {
            validate_value(Some(&f.name), &f.schema, v)?;
        }
        Ok(Struct { schema, values })
    }

    pub fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    /// Sets a field after validating the value against the field schema (`Struct.put`).
    pub fn put(&mut self, field: &str, value: Value) -> Result<&mut Struct, DataError> {
        let f = self
            .schema
            .field_by_name(field)
            .ok_or_else(|| DataError::new(format!("{field} is not a valid field name")))?;
        validate_value(Some(&f.name), &f.schema, &value)?;
        self.values[f.index] = value;
        Ok(self)
    }

    /// The raw value of a field (Null when unset), like `Struct.getWithoutDefault`.
    pub fn get_without_default(&self, field: &str) -> Option<&Value> {
        let f = self.schema.field_by_name(field)?;
        Some(&self.values[f.index])
    }

    /// `Struct.get(field)`: the value, or the field schema's default when the value is null.
    pub fn get(&self, field: &str) -> Option<&Value> {
        let f = self.schema.field_by_name(field)?;
        Some(self.get_by_index(f.index))
    }

    pub fn get_by_index(&self, index: usize) -> &Value {
        let v = &self.values[index];
        if v.is_null() {
            if let Some(d) = &self.schema.fields[index].schema.default_value {
                return d;
            }
        }
        v
    }

    /// `Struct.validate()`: every field's value (or default) fits its schema.
    pub fn validate(&self) -> Result<(), DataError> {
        for f in &self.schema.fields {
            validate_value(Some(&f.name), &f.schema, self.get_by_index(f.index))?;
        }
        Ok(())
    }

    fn write_java(&self, out: &mut String) {
        out.push_str("Struct{");
        let mut first = true;
        for (f, v) in self.schema.fields.iter().zip(&self.values) {
            if v.is_null() {
                continue;
            }
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(&f.name);
            out.push('=');
            v.write_java(Some(&f.schema), out);
        }
        out.push('}');
    }
}

/// `Struct.toString()`: `Struct{name=value,…}` over non-null fields in schema order.
impl fmt::Display for Struct {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        self.write_java(&mut s);
        f.write_str(&s)
    }
}

/// `ConnectSchema.validateValue(name, schema, value)`.
pub fn validate_value(
    field: Option<&str>,
    schema: &Schema,
    value: &Value,
) -> Result<(), DataError> {
    let for_field = || {
        field
            .map(|n| format!(" for field: \"{n}\""))
            .unwrap_or_default()
    };
    if value.is_null() {
        if schema.optional {
            return Ok(());
        }
        return Err(DataError::new(format!(
            "Invalid value: null used for required field: \"{}\", schema type: {}",
            field.unwrap_or("null"),
            schema.schema_type
        )));
    }
    if value.inferred_type() != Some(schema.schema_type) {
        return Err(DataError::new(format!(
            "Invalid Java object for schema type {}: {}{}",
            schema.schema_type,
            value.java_class(),
            for_field()
        )));
    }
    match value {
        Value::Array(items) => {
            if let Some(item_schema) = &schema.value_schema {
                for item in items {
                    validate_value(None, item_schema, item)?;
                }
            }
        }
        Value::Map(entries) => {
            for (k, v) in entries {
                if let Some(ks) = &schema.key_schema {
                    validate_value(None, ks, k)?;
                }
                if let Some(vs) = &schema.value_schema {
                    validate_value(None, vs, v)?;
                }
            }
        }
        Value::Struct(s) => {
            if **s.schema() != *schema {
                return Err(DataError::new(format!(
                    "Struct schemas do not match.{}",
                    for_field()
                )));
            }
            s.validate()?;
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn telemetry_schema() -> Arc<Schema> {
        let string_map = Arc::new(Schema::map(
            Schema::of(Type::String),
            Schema::of(Type::String),
        ));
        Arc::new(
            Schema::new(Type::Struct)
                .name("t")
                .field("a", Schema::of(Type::String))
                .field("b", Schema::optional_of(Type::Int64))
                .field("m", string_map)
                .field("ts", Arc::new(Schema::timestamp())),
        )
    }

    #[test]
    fn struct_to_string_skips_nulls_and_renders_java_style() {
        let mut s = Struct::new(telemetry_schema());
        s.put("a", Value::String(String::new())).unwrap();
        s.put("m", Value::string_map([("x", "1"), ("y", "2")]))
            .unwrap();
        s.put("ts", Value::Int64(1_504_037_746_112)).unwrap();
        assert_eq!(
            s.to_string(),
            "Struct{a=,m={x=1, y=2},ts=Tue Aug 29 20:15:46 UTC 2017}"
        );
        assert_eq!(
            Value::Array(vec![
                Value::Float64(1.0e7),
                Value::Null,
                Value::Boolean(true)
            ])
            .to_java_string(None),
            "[1.0E7, null, true]"
        );
        assert_eq!(Value::Map(vec![]).to_java_string(None), "{}");
        assert!(Value::Bytes(b"hello".to_vec())
            .to_java_string(None)
            .starts_with("[B@"));
    }

    #[test]
    fn put_validates() {
        let mut s = Struct::new(telemetry_schema());
        let err = s.put("a", Value::Int32(1)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Invalid Java object for schema type STRING: class java.lang.Integer for field: \"a\""
        );
        let err = s.put("a", Value::Null).unwrap_err();
        assert!(err
            .to_string()
            .contains("null used for required field: \"a\""));
        assert!(s.put("nope", Value::Null).is_err());
        assert!(s.put("b", Value::Null).is_ok());
        let err = s
            .put(
                "m",
                Value::Map(vec![(Value::String("k".into()), Value::Int64(1))]),
            )
            .unwrap_err();
        assert!(err.to_string().contains("INT64") || err.to_string().contains("STRING"));
        assert!(s.validate().is_err(), "a, m and ts are unset but required");
    }
}

//! Kafka Connect's schema model (`org.apache.kafka.connect.data.Schema`), kept small.
//!
//! Logical types are schemas with a well-known name over a primitive type; their values use the
//! primitive representation: `Timestamp` = `Value::Int64` (epoch millis), `Date` = `Value::Int32`
//! (days since epoch), `Time` = `Value::Int32` (millis of day), `Decimal` = `Value::Bytes` (unscaled
//! big-endian two's complement, parameter `scale`).

use std::fmt;
use std::sync::Arc;

use super::value::Value;

pub const TIMESTAMP_LOGICAL_NAME: &str = "org.apache.kafka.connect.data.Timestamp";
pub const DATE_LOGICAL_NAME: &str = "org.apache.kafka.connect.data.Date";
pub const TIME_LOGICAL_NAME: &str = "org.apache.kafka.connect.data.Time";
pub const DECIMAL_LOGICAL_NAME: &str = "org.apache.kafka.connect.data.Decimal";
pub const DECIMAL_SCALE_PARAMETER: &str = "scale";

/// `Schema.Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Type {
    Boolean,
    Int8,
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    String,
    Bytes,
    Array,
    Map,
    Struct,
}

impl Type {
    /// The JSON schema type name (`JsonSchema.*_TYPE_NAME`): `boolean`, `int8`, …, `float`,
    /// `double`, `bytes`, `string`, `array`, `map`, `struct`.
    pub fn json_name(self) -> &'static str {
        match self {
            Type::Boolean => "boolean",
            Type::Int8 => "int8",
            Type::Int16 => "int16",
            Type::Int32 => "int32",
            Type::Int64 => "int64",
            Type::Float32 => "float",
            Type::Float64 => "double",
            Type::String => "string",
            Type::Bytes => "bytes",
            Type::Array => "array",
            Type::Map => "map",
            Type::Struct => "struct",
        }
    }

    /// Parses a JSON schema type name.
    pub fn from_json_name(s: &str) -> Option<Type> {
        Some(match s {
            "boolean" => Type::Boolean,
            "int8" => Type::Int8,
            "int16" => Type::Int16,
            "int32" => Type::Int32,
            "int64" => Type::Int64,
            "float" => Type::Float32,
            "double" => Type::Float64,
            "string" => Type::String,
            "bytes" => Type::Bytes,
            "array" => Type::Array,
            "map" => Type::Map,
            "struct" => Type::Struct,
            _ => return None,
        })
    }

    /// The Java enum constant name (`Schema.Type.toString()`): `BOOLEAN`, `INT8`, …, `STRUCT`.
    pub fn java_name(self) -> &'static str {
        match self {
            Type::Boolean => "BOOLEAN",
            Type::Int8 => "INT8",
            Type::Int16 => "INT16",
            Type::Int32 => "INT32",
            Type::Int64 => "INT64",
            Type::Float32 => "FLOAT32",
            Type::Float64 => "FLOAT64",
            Type::String => "STRING",
            Type::Bytes => "BYTES",
            Type::Array => "ARRAY",
            Type::Map => "MAP",
            Type::Struct => "STRUCT",
        }
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.java_name())
    }
}

/// A struct field: name, position and schema.
#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    pub name: String,
    pub index: usize,
    pub schema: Arc<Schema>,
}

/// `ConnectSchema`. Build with [`Schema::new`] and the builder methods. Equality is by value
/// (`ConnectSchema.equals`); the same object (or shared child `Arc`s) compares without descending.
#[derive(Clone, Debug)]
pub struct Schema {
    pub schema_type: Type,
    pub optional: bool,
    pub name: Option<String>,
    pub version: Option<i32>,
    pub doc: Option<String>,
    /// Ordered like Java's `LinkedHashMap` of `SchemaBuilder.parameter` calls.
    pub parameters: Option<Vec<(String, String)>>,
    pub default_value: Option<Value>,
    /// Struct fields in declaration order (empty for other types).
    pub fields: Vec<Field>,
    /// Map key schema.
    pub key_schema: Option<Arc<Schema>>,
    /// Map value schema or array item schema.
    pub value_schema: Option<Arc<Schema>>,
}

impl PartialEq for Schema {
    fn eq(&self, o: &Schema) -> bool {
        std::ptr::eq(self, o)
            || (self.schema_type == o.schema_type
                && self.optional == o.optional
                && self.name == o.name
                && self.version == o.version
                && self.doc == o.doc
                && self.parameters == o.parameters
                && self.default_value == o.default_value
                && self.fields == o.fields
                && self.key_schema == o.key_schema
                && self.value_schema == o.value_schema)
    }
}

impl Schema {
    /// A required schema of `schema_type` with nothing else set.
    pub fn new(schema_type: Type) -> Schema {
        Schema {
            schema_type,
            optional: false,
            name: None,
            version: None,
            doc: None,
            parameters: None,
            default_value: None,
            fields: Vec::new(),
            key_schema: None,
            value_schema: None,
        }
    }

    pub fn array(items: Arc<Schema>) -> Schema {
        Schema {
            value_schema: Some(items),
            ..Schema::new(Type::Array)
        }
    }

    pub fn map(keys: Arc<Schema>, values: Arc<Schema>) -> Schema {
        Schema {
            key_schema: Some(keys),
            value_schema: Some(values),
            ..Schema::new(Type::Map)
        }
    }

    pub fn optional(mut self) -> Schema {
        self.optional = true;
        self
    }

    pub fn name(mut self, name: impl Into<String>) -> Schema {
        self.name = Some(name.into());
        self
    }

    pub fn version(mut self, version: i32) -> Schema {
        self.version = Some(version);
        self
    }

    pub fn doc(mut self, doc: impl Into<String>) -> Schema {
        self.doc = Some(doc.into());
        self
    }

    pub fn parameter(mut self, key: impl Into<String>, value: impl Into<String>) -> Schema {
        let (key, value) = (key.into(), value.into());
        let params = self.parameters.get_or_insert_with(Vec::new);
        match params.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => params.push((key, value)),
        }
        self
    }

    pub fn default_value(mut self, value: Value) -> Schema {
        self.default_value = Some(value);
        self
    }

    /// Appends a struct field (panics on a duplicate name, as `SchemaBuilder.field` throws).
    pub fn field(mut self, name: impl Into<String>, schema: Arc<Schema>) -> Schema {
        let name = name.into();
        assert!(
            self.field_by_name(&name).is_none(),
            "Cannot create field because of field name duplication {name}"
        );
        let index = self.fields.len();
        self.fields.push(Field {
            name,
            index,
            schema,
        });
        self
    }

    pub fn field_by_name(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    pub fn parameter_value(&self, key: &str) -> Option<&str> {
        self.parameters
            .as_ref()?
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `Schema.STRING_SCHEMA` and friends, as shared handles.
    pub fn of(schema_type: Type) -> Arc<Schema> {
        Arc::new(Schema::new(schema_type))
    }

    /// `Schema.OPTIONAL_*_SCHEMA`.
    pub fn optional_of(schema_type: Type) -> Arc<Schema> {
        Arc::new(Schema::new(schema_type).optional())
    }

    /// `Timestamp.SCHEMA` (int64 millis).
    pub fn timestamp() -> Schema {
        Schema::new(Type::Int64)
            .name(TIMESTAMP_LOGICAL_NAME)
            .version(1)
    }

    /// `Decimal.schema(scale)` (bytes holding the unscaled value).
    pub fn decimal(scale: i32) -> Schema {
        Schema::new(Type::Bytes)
            .name(DECIMAL_LOGICAL_NAME)
            .version(1)
            .parameter(DECIMAL_SCALE_PARAMETER, scale.to_string())
    }
}

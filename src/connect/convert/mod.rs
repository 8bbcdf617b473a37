//! Kafka Connect converters, byte-identical with the Java classes, one file per converter:
//! `org.apache.kafka.connect.json.JsonConverter` (`json_converter.rs` writes, `json_read.rs`
//! reads), `org.apache.kafka.connect.storage.StringConverter` (`string_converter.rs`) and
//! `org.apache.kafka.connect.converters.ByteArrayConverter` (`byte_array_converter.rs`).
//!
//! [`Converter`] is the configured instance a task holds (built once from the worker's or the
//! connector's `key.converter` / `value.converter` settings); per-instance state (JsonConverter's
//! schema cache) lives inside it, never in a global.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::schema::Schema;
use super::value::{DataError, Value};

mod byte_array_converter;
mod json_converter;
mod json_read;
mod string_converter;
#[cfg(test)]
mod tests;

pub use json_converter::{DecimalFormat, JsonConverter, MAX_CACHED_SCHEMAS};
pub use json_read::{as_connect_schema, convert_to_connect};
pub use string_converter::JavaCharset;

/// Conversion failures carry Connect's `DataException` text.
pub type ConvertError = DataError;

pub const JSON_CONVERTER: &str = "org.apache.kafka.connect.json.JsonConverter";
pub const STRING_CONVERTER: &str = "org.apache.kafka.connect.storage.StringConverter";
pub const BYTE_ARRAY_CONVERTER: &str = "org.apache.kafka.connect.converters.ByteArrayConverter";

/// A configured converter.
#[derive(Clone, Debug, PartialEq)]
pub enum Converter {
    Json(JsonConverter),
    String {
        /// `converter.encoding` (default UTF-8).
        encoding: JavaCharset,
    },
    ByteArray,
}

impl Converter {
    /// The JsonConverter with the given `schemas.enable` and every other setting at its default.
    pub fn json(schemas_enable: bool) -> Converter {
        Converter::Json(JsonConverter::new(
            schemas_enable,
            DecimalFormat::Base64,
            true,
            JsonConverter::DEFAULT_CACHE_SIZE,
        ))
    }

    /// Builds a converter from its Java class name and its prefix-stripped properties
    /// (`key.converter.schemas.enable` → `schemas.enable`). Worker plugin aliases (the simple
    /// class name, or it without the `Converter` suffix) are accepted too.
    pub fn configure(
        class: &str,
        props: &BTreeMap<String, String>,
        is_key: bool,
    ) -> Result<Converter, String> {
        let which = if is_key {
            "key.converter"
        } else {
            "value.converter"
        };
        match class.trim() {
            JSON_CONVERTER | "JsonConverter" | "Json" => {
                let schemas_enable = match props.get("schemas.enable") {
                    None => true,
                    Some(v) => parse_bool(v).ok_or_else(|| {
                        format!(
                            "Invalid value {v} for configuration schemas.enable: Expected value to be either true or false"
                        )
                    })?,
                };
                let decimal_format = match props.get("decimal.format").map(|s| s.trim()) {
                    None => DecimalFormat::Base64,
                    Some(v) if v.eq_ignore_ascii_case("BASE64") => DecimalFormat::Base64,
                    Some(v) if v.eq_ignore_ascii_case("NUMERIC") => DecimalFormat::Numeric,
                    Some(v) => {
                        return Err(format!(
                            "Invalid value {v} for configuration decimal.format: String must be one of (case insensitive): BASE64, NUMERIC"
                        ))
                    }
                };
                let replace_null_with_default = match props.get("replace.null.with.default") {
                    None => true,
                    Some(v) => parse_bool(v).ok_or_else(|| {
                        format!(
                            "Invalid value {v} for configuration replace.null.with.default: Expected value to be either true or false"
                        )
                    })?,
                };
                let cache_size = match props.get("schemas.cache.size") {
                    None => JsonConverter::DEFAULT_CACHE_SIZE,
                    Some(v) => v.trim().parse::<i32>().map_err(|_| {
                        format!("Invalid value {v} for configuration schemas.cache.size: Not a number of type INT")
                    })?.max(0) as usize,
                };
                Ok(Converter::Json(JsonConverter::new(
                    schemas_enable,
                    decimal_format,
                    replace_null_with_default,
                    cache_size,
                )))
            }
            STRING_CONVERTER | "StringConverter" | "String" => {
                let encoding = match props.get("converter.encoding") {
                    None => JavaCharset::Utf8,
                    Some(name) => JavaCharset::for_name(name).ok_or_else(|| {
                        format!(
                            "Invalid value {name} for configuration converter.encoding: unsupported encoding"
                        )
                    })?,
                };
                Ok(Converter::String { encoding })
            }
            BYTE_ARRAY_CONVERTER | "ByteArrayConverter" | "ByteArray" => Ok(Converter::ByteArray),
            other => Err(format!(
                "Invalid value {other} for configuration {which}: Class {other} could not be found. \
                 iotconnect supports {JSON_CONVERTER}, {STRING_CONVERTER} and {BYTE_ARRAY_CONVERTER}"
            )),
        }
    }

    /// The Java class name of this converter.
    pub fn class_name(&self) -> &'static str {
        match self {
            Converter::Json(_) => JSON_CONVERTER,
            Converter::String { .. } => STRING_CONVERTER,
            Converter::ByteArray => BYTE_ARRAY_CONVERTER,
        }
    }

    /// Checks up front whether records with `schema` can be converted at all, so a worker can refuse
    /// to start instead of failing on the first record (ByteArrayConverter with a Struct schema).
    pub fn check_schema(&self, schema: Option<&Schema>) -> Result<(), ConvertError> {
        match self {
            Converter::ByteArray => byte_array_converter::check_schema(schema),
            _ => Ok(()),
        }
    }

    /// `Converter.fromConnectData(topic, schema, value)`. `Ok(None)` is a Kafka null.
    pub fn from_connect_data(
        &self,
        schema: Option<&Schema>,
        value: &Value,
    ) -> Result<Option<Vec<u8>>, ConvertError> {
        match self {
            Converter::Json(c) => c.from_connect_data(schema, value),
            Converter::String { encoding } => {
                string_converter::from_connect_data(*encoding, schema, value)
            }
            Converter::ByteArray => byte_array_converter::from_connect_data(schema, value),
        }
    }

    /// `Converter.toConnectData(topic, bytes)` for the sink side. `None` bytes are a Kafka null.
    pub fn to_connect_data(
        &self,
        bytes: Option<&[u8]>,
    ) -> Result<(Option<Arc<Schema>>, Value), ConvertError> {
        match self {
            Converter::Json(c) => c.to_connect_data(bytes),
            Converter::String { encoding } => string_converter::to_connect_data(*encoding, bytes),
            Converter::ByteArray => byte_array_converter::to_connect_data(bytes),
        }
    }
}

/// Java `ConfigDef` BOOLEAN parsing: trimmed, case-insensitive `true`/`false`.
fn parse_bool(v: &str) -> Option<bool> {
    let v = v.trim();
    if v.eq_ignore_ascii_case("true") {
        Some(true)
    } else if v.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

//! `org.apache.kafka.connect.converters.ByteArrayConverter`: bytes pass through untouched; any
//! schema other than BYTES is refused with Connect's error text.

use std::sync::Arc;

use crate::connect::schema::{Schema, Type};
use crate::connect::value::{DataError, Value};

use super::ConvertError;

pub(super) fn schema_error(t: Type) -> DataError {
    DataError::new(format!("Invalid schema type for ByteArrayConverter: {t}"))
}

/// Whether records with `schema` can be written at all (checked once, at start-up).
pub(super) fn check_schema(schema: Option<&Schema>) -> Result<(), ConvertError> {
    match schema {
        Some(s) if s.schema_type != Type::Bytes => Err(schema_error(s.schema_type)),
        _ => Ok(()),
    }
}

/// `fromConnectData`: the bytes themselves; null stays null.
pub(super) fn from_connect_data(
    schema: Option<&Schema>,
    value: &Value,
) -> Result<Option<Vec<u8>>, ConvertError> {
    check_schema(schema)?;
    match value {
        Value::Null => Ok(None),
        Value::Bytes(b) => Ok(Some(b.clone())),
        other => Err(DataError::new(format!(
            "ByteArrayConverter is not compatible with objects of type {}",
            other.java_class()
        ))),
    }
}

/// `toConnectData`: an optional bytes schema and the bytes.
pub(super) fn to_connect_data(
    bytes: Option<&[u8]>,
) -> Result<(Option<Arc<Schema>>, Value), ConvertError> {
    let schema = Schema::optional_of(Type::Bytes);
    match bytes {
        None => Ok((Some(schema), Value::Null)),
        Some(b) => Ok((Some(schema), Value::Bytes(b.to_vec()))),
    }
}

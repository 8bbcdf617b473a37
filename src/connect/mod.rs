//! Kafka Connect's data model and converters, byte-exact with the Java worker: the `Schema` /
//! `Struct` / `Value` model, the toketi IoT Hub record, the JSON writer Jackson-compatible to the
//! byte, and `JsonConverter` / `StringConverter` / `ByteArrayConverter`.

pub mod convert;
pub mod java;
pub mod json;
#[cfg(test)]
pub(crate) mod proptests;
pub mod record;
pub mod schema;
pub mod value;

pub use convert::{ConvertError, Converter, JavaCharset};
pub use record::{iothub_value_schema, to_struct, AmqpScalar, IotEvent};
pub use schema::{Field, Schema, Type};
pub use value::{DataError, Struct, Value};

//! JsonConverter's reading side (`toConnectData`): a JSON schema object to a Connect [`Schema`]
//! (`asConnectSchema`) and a JSON value to a Connect [`Value`] (`convertToConnect`).

use std::sync::Arc;

use base64::Engine;

use crate::connect::schema::{
    Schema, Type, DATE_LOGICAL_NAME, DECIMAL_LOGICAL_NAME, TIMESTAMP_LOGICAL_NAME,
    TIME_LOGICAL_NAME,
};
use crate::connect::value::{validate_value, DataError, Struct, Value};

use super::ConvertError;

fn node_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "NULL",
        serde_json::Value::Bool(_) => "BOOLEAN",
        serde_json::Value::Number(_) => "NUMBER",
        serde_json::Value::String(_) => "STRING",
        serde_json::Value::Array(_) => "ARRAY",
        serde_json::Value::Object(_) => "OBJECT",
    }
}

/// `JsonConverter.asConnectSchema`: a JSON schema object (or null) to a Connect schema.
pub fn as_connect_schema(js: &serde_json::Value) -> Result<Option<Schema>, ConvertError> {
    if js.is_null() {
        return Ok(None);
    }
    let obj = js
        .as_object()
        .ok_or_else(|| DataError::new("Schema must contain 'type' field"))?;
    let type_name = obj
        .get("type")
        .and_then(|t| t.as_str())
        .ok_or_else(|| DataError::new("Schema must contain 'type' field"))?;
    let schema_type = Type::from_json_name(type_name)
        .ok_or_else(|| DataError::new(format!("Unknown schema type: {type_name}")))?;
    let required =
        |v: Option<&serde_json::Value>, msg: &str| -> Result<Arc<Schema>, ConvertError> {
            match v {
                Some(v) if !v.is_null() => Ok(Arc::new(
                    as_connect_schema(v)?.ok_or_else(|| DataError::new(msg.to_string()))?,
                )),
                _ => Err(DataError::new(msg.to_string())),
            }
        };
    let mut schema = match schema_type {
        Type::Array => Schema::array(required(
            obj.get("items"),
            "Array schema did not specify the element type",
        )?),
        Type::Map => Schema::map(
            required(obj.get("keys"), "Map schema did not specify the key type")?,
            required(
                obj.get("values"),
                "Map schema did not specify the value type",
            )?,
        ),
        Type::Struct => {
            let fields = obj
                .get("fields")
                .and_then(|f| f.as_array())
                .ok_or_else(|| {
                    DataError::new("Struct schema's \"fields\" argument is not an array.")
                })?;
            let mut s = Schema::new(Type::Struct);
            for field in fields {
                let name = field.get("field").and_then(|n| n.as_str()).ok_or_else(|| {
                    DataError::new("Struct schema's field name not specified properly")
                })?;
                if s.field_by_name(name).is_some() {
                    return Err(DataError::new(format!(
                        "Cannot create field because of field name duplication {name}"
                    )));
                }
                let fs = as_connect_schema(field)?
                    .ok_or_else(|| DataError::new("Schema must contain 'type' field"))?;
                s = s.field(name, Arc::new(fs));
            }
            s
        }
        t => Schema::new(t),
    };
    schema.optional = obj.get("optional").and_then(|o| o.as_bool()) == Some(true);
    if let Some(name) = obj.get("name").and_then(|n| n.as_str()) {
        schema.name = Some(name.to_string());
    }
    if let Some(v) = obj.get("version").and_then(|v| v.as_i64()) {
        schema.version = Some(v as i32);
    }
    if let Some(doc) = obj.get("doc").and_then(|d| d.as_str()) {
        schema.doc = Some(doc.to_string());
    }
    if let Some(params) = obj.get("parameters").and_then(|p| p.as_object()) {
        for (k, v) in params {
            let v = v
                .as_str()
                .ok_or_else(|| DataError::new("Schema parameters must have string values."))?;
            schema = schema.parameter(k.clone(), v);
        }
    }
    if let Some(d) = obj.get("default") {
        let default = convert_to_connect(Some(&schema), d)?;
        if !default.is_null() {
            validate_value(None, &schema, &default)?;
            schema.default_value = Some(default);
        }
    }
    Ok(Some(schema))
}

/// `JsonConverter.convertToConnect(schema, json)`. Stricter than Java where Java silently turns a
/// wrong JSON type into 0/false/null: a mismatch is an error naming the expected type.
pub fn convert_to_connect(
    schema: Option<&Schema>,
    v: &serde_json::Value,
) -> Result<Value, ConvertError> {
    use serde_json::Value as J;
    let Some(s) = schema else {
        return Ok(match v {
            J::Null => Value::Null,
            J::Bool(b) => Value::Boolean(*b),
            J::Number(n) => match n.as_i64() {
                Some(i) => Value::Int64(i),
                None => match n.as_u64() {
                    Some(u) => Value::Int64(u as i64),
                    None => Value::Float64(n.as_f64().unwrap_or(f64::NAN)),
                },
            },
            J::String(s) => Value::String(s.clone()),
            J::Array(a) => Value::Array(
                a.iter()
                    .map(|e| convert_to_connect(None, e))
                    .collect::<Result<_, _>>()?,
            ),
            J::Object(m) => Value::Map(
                m.iter()
                    .map(|(k, e)| Ok((Value::String(k.clone()), convert_to_connect(None, e)?)))
                    .collect::<Result<_, ConvertError>>()?,
            ),
        });
    };
    if v.is_null() {
        if let Some(d) = &s.default_value {
            return Ok(d.clone());
        }
        if s.optional {
            return Ok(Value::Null);
        }
        return Err(DataError::new(format!(
            "Invalid null value for required {} field",
            s.schema_type
        )));
    }
    let mismatch = || {
        DataError::new(format!(
            "Invalid JSON for {} schema: found {}",
            s.schema_type,
            node_type(v)
        ))
    };
    match s.name.as_deref() {
        Some(TIMESTAMP_LOGICAL_NAME) | Some(DATE_LOGICAL_NAME) | Some(TIME_LOGICAL_NAME)
            if !(v.is_i64() || v.is_u64()) =>
        {
            return Err(DataError::new(format!(
                "Invalid type for {}, underlying representation should be integral but was {}",
                s.name
                    .as_deref()
                    .unwrap_or_default()
                    .rsplit('.')
                    .next()
                    .unwrap_or_default(),
                node_type(v)
            )))
        }
        Some(DECIMAL_LOGICAL_NAME) if v.is_number() => {
            return Err(DataError::new(
                "Decimal values written with decimal.format=NUMERIC cannot be read by iotconnect",
            ))
        }
        _ => {}
    }
    let int = || -> Result<i64, ConvertError> {
        v.as_i64()
            .or_else(|| v.as_u64().map(|u| u as i64))
            .ok_or_else(mismatch)
    };
    Ok(match s.schema_type {
        Type::Boolean => Value::Boolean(v.as_bool().ok_or_else(mismatch)?),
        Type::Int8 => Value::Int8(int()? as i8),
        Type::Int16 => Value::Int16(int()? as i16),
        Type::Int32 => Value::Int32(int()? as i32),
        Type::Int64 => Value::Int64(int()?),
        Type::Float32 => Value::Float32(v.as_f64().ok_or_else(mismatch)? as f32),
        Type::Float64 => Value::Float64(v.as_f64().ok_or_else(mismatch)?),
        Type::String => Value::String(v.as_str().ok_or_else(mismatch)?.to_string()),
        Type::Bytes => {
            let text = v.as_str().ok_or_else(mismatch)?;
            Value::Bytes(
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|e| DataError::new(format!("Invalid bytes field: {e}")))?,
            )
        }
        Type::Array => {
            let items = s.value_schema.as_deref();
            Value::Array(
                v.as_array()
                    .ok_or_else(mismatch)?
                    .iter()
                    .map(|e| convert_to_connect(items, e))
                    .collect::<Result<_, _>>()?,
            )
        }
        Type::Map => {
            let ks = s.key_schema.as_deref();
            let vs = s.value_schema.as_deref();
            if ks.map(|k| k.schema_type) == Some(Type::String) {
                let m = v.as_object().ok_or_else(|| {
                    DataError::new(format!(
                        "Maps with string fields should be encoded as JSON objects, but found {}",
                        node_type(v)
                    ))
                })?;
                Value::Map(
                    m.iter()
                        .map(|(k, e)| Ok((Value::String(k.clone()), convert_to_connect(vs, e)?)))
                        .collect::<Result<_, ConvertError>>()?,
                )
            } else {
                let a = v.as_array().ok_or_else(|| {
                    DataError::new(format!(
                        "Maps with non-string fields should be encoded as JSON array of tuples, but found {}",
                        node_type(v)
                    ))
                })?;
                let mut entries = Vec::with_capacity(a.len());
                for e in a {
                    let pair = e.as_array().ok_or_else(|| {
                        DataError::new(format!(
                            "Found invalid map entry instead of array tuple: {}",
                            node_type(e)
                        ))
                    })?;
                    if pair.len() != 2 {
                        return Err(DataError::new(format!(
                            "Found invalid map entry, expected length 2 but found :{}",
                            pair.len()
                        )));
                    }
                    entries.push((
                        convert_to_connect(ks, &pair[0])?,
                        convert_to_connect(vs, &pair[1])?,
                    ));
                }
                Value::Map(entries)
            }
        }
        Type::Struct => {
            let m = v.as_object().ok_or_else(|| {
                DataError::new(format!(
                    "Structs should be encoded as JSON objects, but found {}",
                    node_type(v)
                ))
            })?;
            let mut st = Struct::new(Arc::new(s.clone()));
            for f in &s.fields {
                let fv = convert_to_connect(Some(&f.schema), m.get(&f.name).unwrap_or(&J::Null))?;
                st.put(&f.name, fv)?;
            }
            Value::Struct(st)
        }
    })
}

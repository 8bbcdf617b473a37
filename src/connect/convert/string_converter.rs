//! `org.apache.kafka.connect.storage.StringConverter`: values as `toString()` encoded with
//! `converter.encoding`, and read back as an optional string; [`JavaCharset`] is the JDK's charset
//! behaviour the encoding follows.

use std::sync::Arc;

use crate::connect::java;
use crate::connect::schema::{Schema, Type};
use crate::connect::value::Value;

use super::ConvertError;

/// A Java charset as `StringConverter` uses it (`converter.encoding`). UTF-8, US-ASCII,
/// ISO-8859-1 and the UTF-16 family follow the JDK exactly (unmappable characters encode as `?`,
/// malformed input decodes as U+FFFD); other names go through the WHATWG tables of `encoding_rs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JavaCharset {
    Utf8,
    UsAscii,
    Latin1,
    /// `UTF-16`: encodes big-endian with a BOM; decodes honouring a BOM, big-endian otherwise.
    Utf16,
    Utf16Be,
    Utf16Le,
    Other(&'static encoding_rs::Encoding),
}

impl JavaCharset {
    /// `Charset.forName` for the common names and aliases (case-insensitive).
    pub fn for_name(name: &str) -> Option<JavaCharset> {
        let n = name.trim().to_ascii_lowercase();
        Some(match n.as_str() {
            "utf-8" | "utf8" | "unicode-1-1-utf-8" => JavaCharset::Utf8,
            "us-ascii" | "ascii" | "iso646-us" | "ascii7" | "646" | "us" | "iso_646.irv:1983"
            | "ansi_x3.4-1968" | "cp367" | "csascii" | "default" | "ibm367" => JavaCharset::UsAscii,
            "iso-8859-1" | "iso8859_1" | "iso8859-1" | "iso_8859-1" | "latin1" | "l1"
            | "8859_1" | "iso_8859_1" | "ibm819" | "cp819" | "csisolatin1" | "819"
            | "iso-ir-100" | "iso_8859-1:1987" => JavaCharset::Latin1,
            "utf-16" | "utf16" | "utf_16" | "unicode" => JavaCharset::Utf16,
            "utf-16be" | "utf_16be" | "x-utf-16be" | "iso-10646-ucs-2" | "unicodebigunmarked" => {
                JavaCharset::Utf16Be
            }
            "utf-16le" | "utf_16le" | "x-utf-16le" | "unicodelittleunmarked" => {
                JavaCharset::Utf16Le
            }
            _ => JavaCharset::Other(encoding_rs::Encoding::for_label(n.as_bytes())?),
        })
    }

    /// `String.getBytes(charset)`.
    pub fn encode(&self, s: &str) -> Vec<u8> {
        match self {
            JavaCharset::Utf8 => s.as_bytes().to_vec(),
            JavaCharset::UsAscii => s
                .chars()
                .map(|c| if c.is_ascii() { c as u8 } else { b'?' })
                .collect(),
            JavaCharset::Latin1 => s
                .chars()
                .map(|c| if (c as u32) < 0x100 { c as u8 } else { b'?' })
                .collect(),
            JavaCharset::Utf16 => {
                let mut out = vec![0xFE, 0xFF];
                out.extend(s.encode_utf16().flat_map(|u| u.to_be_bytes()));
                out
            }
            JavaCharset::Utf16Be => s.encode_utf16().flat_map(|u| u.to_be_bytes()).collect(),
            JavaCharset::Utf16Le => s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect(),
            JavaCharset::Other(enc) => {
                let mut encoder = enc.output_encoding().new_encoder();
                let mut out = Vec::with_capacity(s.len() + 16);
                let mut rest = s;
                loop {
                    let cap = encoder
                        .max_buffer_length_from_utf8_without_replacement(rest.len())
                        .unwrap_or(rest.len() * 4 + 16);
                    let start = out.len();
                    out.resize(start + cap, 0);
                    let (result, read, written) =
                        encoder.encode_from_utf8_without_replacement(rest, &mut out[start..], true);
                    out.truncate(start + written);
                    rest = &rest[read..];
                    match result {
                        encoding_rs::EncoderResult::InputEmpty => break,
                        encoding_rs::EncoderResult::Unmappable(_) => out.push(b'?'),
                        encoding_rs::EncoderResult::OutputFull => {}
                    }
                }
                out
            }
        }
    }

    /// `new String(bytes, charset)`.
    pub fn decode(&self, b: &[u8]) -> String {
        let utf16 = |b: &[u8], be: bool| -> String {
            let units: Vec<u16> = b
                .chunks_exact(2)
                .map(|c| {
                    if be {
                        u16::from_be_bytes([c[0], c[1]])
                    } else {
                        u16::from_le_bytes([c[0], c[1]])
                    }
                })
                .collect();
            let mut s = String::from_utf16_lossy(&units);
            if b.len() % 2 == 1 {
                s.push('\u{FFFD}');
            }
            s
        };
        match self {
            JavaCharset::Utf8 => java::decode_utf8_java(b),
            JavaCharset::UsAscii => b
                .iter()
                .map(|&x| if x < 0x80 { x as char } else { '\u{FFFD}' })
                .collect(),
            JavaCharset::Latin1 => b.iter().map(|&x| x as char).collect(),
            JavaCharset::Utf16 => match b {
                [0xFE, 0xFF, rest @ ..] => utf16(rest, true),
                [0xFF, 0xFE, rest @ ..] => utf16(rest, false),
                _ => utf16(b, true),
            },
            JavaCharset::Utf16Be => utf16(b, true),
            JavaCharset::Utf16Le => utf16(b, false),
            JavaCharset::Other(enc) => enc.decode_without_bom_handling(b).0.into_owned(),
        }
    }
}

/// `fromConnectData`: null stays null, anything else is `toString()` in `encoding`.
pub(super) fn from_connect_data(
    encoding: JavaCharset,
    schema: Option<&Schema>,
    value: &Value,
) -> Result<Option<Vec<u8>>, ConvertError> {
    if value.is_null() {
        return Ok(None);
    }
    Ok(Some(encoding.encode(&value.to_java_string(schema))))
}

/// `toConnectData`: an optional string schema and the decoded text (null for a Kafka null).
pub(super) fn to_connect_data(
    encoding: JavaCharset,
    bytes: Option<&[u8]>,
) -> Result<(Option<Arc<Schema>>, Value), ConvertError> {
    let schema = Schema::optional_of(Type::String);
    match bytes {
        None => Ok((Some(schema), Value::Null)),
        Some(b) => Ok((Some(schema), Value::String(encoding.decode(b)))),
    }
}

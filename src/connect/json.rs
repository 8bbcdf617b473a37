//! A JSON writer that produces the exact bytes Jackson's `UTF8JsonGenerator` writes for Kafka
//! Connect's `JsonConverter` (compact, no whitespace).
//!
//! * Strings: `"` and `\` get a backslash; the control characters U+0008, U+0009, U+000A, U+000C and
//!   U+000D use the short escapes `\b \t \n \f \r`; every other control character below U+0020
//!   becomes `\u00XX` with upper-case hex. `/`, U+007F and other BMP characters are written raw as
//!   UTF-8. Characters outside the BMP are written as an escaped UTF-16 surrogate pair
//!   (`\uD83D\uDD11`), as Jackson's generator does.
//! * Doubles and floats: Java `Double.toString` / `Float.toString`; NaN and the infinities are
//!   quoted strings (`"NaN"`, `"Infinity"`), Jackson's `QUOTE_NON_NUMERIC_NUMBERS` default.
//! * Binary: base64, standard alphabet with padding, no line feeds.

use base64::Engine;

use super::java;

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Appends `s` as a quoted JSON string.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    // Runs of bytes that need no escaping are copied at once: everything but `"`, `\`, control
    // characters and the lead byte of a 4-byte (non-BMP) UTF-8 sequence, which Jackson writes as a
    // surrogate pair. Continuation bytes of BMP characters are >= 0x80 and < 0xF0, so they are plain.
    // Eight bytes are tested at once while none of them is special.
    let bytes = s.as_bytes();
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        while let Some(chunk) = bytes.get(i..i + 8) {
            if has_special(u64::from_le_bytes(chunk.try_into().expect("8 bytes"))) {
                break;
            }
            i += 8;
        }
        while i < bytes.len() && is_plain(bytes[i]) {
            i += 1;
        }
        if i == bytes.len() {
            break;
        }
        out.extend_from_slice(&bytes[start..i]);
        let ch = s[i..].chars().next().expect("i is on a char boundary");
        write_escaped_char(out, ch);
        i += ch.len_utf8();
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// A byte [`write_str`] copies as it is.
fn is_plain(b: u8) -> bool {
    b >= 0x20 && b != b'"' && b != b'\\' && b < 0xF0
}

/// True when any of the 8 bytes of `x` is not [`is_plain`] (exact, no false positives: the
/// "has zero byte" and "has byte less than n" word tricks).
fn has_special(x: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH != 0;
    let below_space = x.wrapping_sub(ONES * 0x20) & !x & HIGH != 0;
    below_space
        || zero(x ^ (ONES * u64::from(b'"')))
        || zero(x ^ (ONES * u64::from(b'\\')))
        || zero((x & (ONES * 0xF0)) ^ (ONES * 0xF0))
}

/// One character that needs escaping.
fn write_escaped_char(out: &mut Vec<u8>, ch: char) {
    let c = ch as u32;
    match ch {
        '"' => out.extend_from_slice(b"\\\""),
        '\\' => out.extend_from_slice(b"\\\\"),
        '\u{08}' => out.extend_from_slice(b"\\b"),
        '\t' => out.extend_from_slice(b"\\t"),
        '\n' => out.extend_from_slice(b"\\n"),
        '\u{0C}' => out.extend_from_slice(b"\\f"),
        '\r' => out.extend_from_slice(b"\\r"),
        _ if c < 0x20 => write_u_escape(out, c as u16),
        _ if c > 0xFFFF => {
            let mut units = [0u16; 2];
            for unit in ch.encode_utf16(&mut units) {
                write_u_escape(out, *unit);
            }
        }
        _ => {
            let mut buf = [0u8; 4];
            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
        }
    }
}

fn write_u_escape(out: &mut Vec<u8>, unit: u16) {
    out.extend_from_slice(b"\\u");
    for shift in [12, 8, 4, 0] {
        out.push(HEX[((unit >> shift) & 0xF) as usize]);
    }
}

/// `{"k":"v",…}`: string pairs as a JSON object, in the order given (the caller has made the keys
/// unique).
pub fn write_str_object<'a>(
    out: &mut Vec<u8>,
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) {
    out.push(b'{');
    for (i, (k, v)) in pairs.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, k);
        out.push(b':');
        write_str(out, v);
    }
    out.push(b'}');
}

/// The quoted JSON text of `s` as a `String` (for building keys in tests and tools).
pub fn quote(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len() + 2);
    write_str(&mut out, s);
    String::from_utf8(out).expect("escaped JSON of a str is UTF-8")
}

pub fn write_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(v.to_string().as_bytes());
}

pub fn write_f64(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        out.extend_from_slice(java::double_to_string(v).as_bytes());
    } else {
        write_str(out, &java::double_to_string(v));
    }
}

pub fn write_f32(out: &mut Vec<u8>, v: f32) {
    if v.is_finite() {
        out.extend_from_slice(java::float_to_string(v).as_bytes());
    } else {
        write_str(out, &java::float_to_string(v));
    }
}

pub fn write_bool(out: &mut Vec<u8>, v: bool) {
    out.extend_from_slice(if v { b"true" } else { b"false" });
}

pub fn write_null(out: &mut Vec<u8>) {
    out.extend_from_slice(b"null");
}

/// Bytes as Jackson writes a `BinaryNode`: a base64 string (standard alphabet, padded).
pub fn write_base64(out: &mut Vec<u8>, b: &[u8]) {
    out.push(b'"');
    out.extend_from_slice(
        base64::engine::general_purpose::STANDARD
            .encode(b)
            .as_bytes(),
    );
    out.push(b'"');
}

/// Re-serializes a parsed `serde_json` value in Jackson's compact style (used for values that came
/// from JSON text: offsets file entries, schema defaults read back). Integers stay integers,
/// fractions are written with `Double.toString`.
pub fn write_serde(out: &mut Vec<u8>, v: &serde_json::Value) {
    match v {
        serde_json::Value::Null => write_null(out),
        serde_json::Value::Bool(b) => write_bool(out, *b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                write_i64(out, i);
            } else if let Some(u) = n.as_u64() {
                out.extend_from_slice(u.to_string().as_bytes());
            } else {
                write_f64(out, n.as_f64().unwrap_or(f64::NAN));
            }
        }
        serde_json::Value::String(s) => write_str(out, s),
        serde_json::Value::Array(a) => {
            out.push(b'[');
            for (i, e) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_serde(out, e);
            }
            out.push(b']');
        }
        serde_json::Value::Object(m) => {
            out.push(b'{');
            for (i, (k, e)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, k);
                out.push(b':');
                write_serde(out, e);
            }
            out.push(b'}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> String {
        quote(x)
    }

    #[test]
    fn string_escaping_matches_jackson() {
        assert_eq!(s("plain"), r#""plain""#);
        assert_eq!(s(r#"a"b\c/d"#), r#""a\"b\\c/d""#);
        assert_eq!(s("\u{08}\t\n\u{0C}\r"), r#""\b\t\n\f\r""#);
        assert_eq!(
            s("\u{00}\u{01}\u{0B}\u{1F}"),
            r#""\u0000\u0001\u000B\u001F""#
        );
        assert_eq!(s("\u{7F}"), "\"\u{7F}\"");
        assert_eq!(s("héllo 한국어 €"), "\"héllo 한국어 €\"");
        assert_eq!(s("key\u{1F511}!"), r#""key\uD83D\uDD11!""#);
        assert_eq!(s("\u{10FFFF}"), r#""\uDBFF\uDFFF""#);
        assert_eq!(s("\u{2028}\u{FEFF}"), "\"\u{2028}\u{FEFF}\"");
    }

    #[test]
    fn numbers_and_binary() {
        let mut out = Vec::new();
        write_f64(&mut out, 1.5);
        out.push(b',');
        write_f64(&mut out, 1.0e7);
        out.push(b',');
        write_f64(&mut out, f64::NAN);
        out.push(b',');
        write_f32(&mut out, f32::NEG_INFINITY);
        out.push(b',');
        write_i64(&mut out, -42);
        out.push(b',');
        write_base64(&mut out, b"hello");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"1.5,1.0E7,"NaN","-Infinity",-42,"aGVsbG8=""#
        );
    }

    #[test]
    fn serde_values_rewritten_compactly() {
        let v: serde_json::Value = serde_json::from_str(
            r#"{ "b" : [1, 2.5, true, null, "x\u00e9\ud83d\udd11"], "a" : {} }"#,
        )
        .unwrap();
        let mut out = Vec::new();
        write_serde(&mut out, &v);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"b\":[1,2.5,true,null,\"x\u{e9}\\uD83D\\uDD11\"],\"a\":{}}"
        );
    }
}

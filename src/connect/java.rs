//! Java `toString()` renderings that reach the bytes on the topic: `Double.toString`,
//! `Float.toString`, `java.util.Date.toString()`, `Instant.toString()`, `UUID.toString()`, proton-j
//! `Binary.toString()`, `BigDecimal.toString()` and `String.hashCode()`.
//!
//! Numbers follow the JDK 19+ specification of `Double.toString` (shortest decimal that rounds back
//! to the same value; when that has one digit, the closest of the one- or two-digit candidates).
//! JDK 8/11 produce the same text for all but rare values where the old algorithm printed extra
//! digits.

use time::{Month, OffsetDateTime, Weekday};

/// Java `Double.toString(d)`.
pub fn double_to_string(d: f64) -> String {
    if d.is_nan() {
        return "NaN".into();
    }
    if d.is_infinite() {
        return if d > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if d == 0.0 {
        return if d.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    let (digits, exp) = shortest_digits(format!("{:e}", d.abs()), || {
        let two = format!("{:.1e}", d.abs());
        (two.parse::<f64>().ok() == Some(d.abs())).then_some(two)
    });
    render_java(d.is_sign_negative(), &digits, exp)
}

/// Java `Float.toString(f)`.
pub fn float_to_string(f: f32) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    let (digits, exp) = shortest_digits(format!("{:e}", f.abs()), || {
        let two = format!("{:.1e}", f.abs());
        (two.parse::<f32>().ok() == Some(f.abs())).then_some(two)
    });
    render_java(f.is_sign_negative(), &digits, exp)
}

/// Splits Rust's shortest scientific rendering (`1.2345e-5`) into significant digits and the
/// decimal exponent of the first digit. When the shortest form has a single digit, Java prefers a
/// closer two-digit decimal if one rounds to the same value (e.g. `4.9E-324`).
fn shortest_digits(sci: String, two_digit: impl Fn() -> Option<String>) -> (String, i32) {
    let parse = |s: &str| -> (String, i32) {
        let (mant, exp) = s.split_once('e').expect("rust {:e} output has an exponent");
        let digits: String = mant.chars().filter(|c| *c != '.').collect();
        (digits, exp.parse::<i32>().expect("exponent is an integer"))
    };
    let (digits, exp) = parse(&sci);
    if digits.len() == 1 {
        if let Some(two) = two_digit() {
            let (d2, e2) = parse(&two);
            let d2 = d2.trim_end_matches('0').to_string();
            if d2.len() == 2 {
                return (d2, e2);
            }
        }
    }
    (digits, exp)
}

/// Java's layout: plain for 1e-3 <= |x| < 1e7, otherwise `d.dddE<exp>`; always a digit after `.`.
fn render_java(negative: bool, digits: &str, exp: i32) -> String {
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    if (-3..7).contains(&exp) {
        if exp < 0 {
            out.push_str("0.");
            for _ in 0..(-exp - 1) {
                out.push('0');
            }
            out.push_str(digits);
        } else {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                out.push_str(digits);
                for _ in digits.len()..int_len {
                    out.push('0');
                }
                out.push_str(".0");
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        out.push('.');
        if digits.len() > 1 {
            out.push_str(&digits[1..]);
        } else {
            out.push('0');
        }
        out.push('E');
        out.push_str(&exp.to_string());
    }
    out
}

fn utc_from_millis(ms: i64) -> Option<OffsetDateTime> {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let t = OffsetDateTime::from_unix_timestamp(secs).ok()?;
    Some(t + time::Duration::milliseconds(millis))
}

fn weekday_abbrev(w: Weekday) -> &'static str {
    match w {
        Weekday::Monday => "Mon",
        Weekday::Tuesday => "Tue",
        Weekday::Wednesday => "Wed",
        Weekday::Thursday => "Thu",
        Weekday::Friday => "Fri",
        Weekday::Saturday => "Sat",
        Weekday::Sunday => "Sun",
    }
}

fn month_abbrev(m: Month) -> &'static str {
    match m {
        Month::January => "Jan",
        Month::February => "Feb",
        Month::March => "Mar",
        Month::April => "Apr",
        Month::May => "May",
        Month::June => "Jun",
        Month::July => "Jul",
        Month::August => "Aug",
        Month::September => "Sep",
        Month::October => "Oct",
        Month::November => "Nov",
        Month::December => "Dec",
    }
}

/// Java `new java.util.Date(ms).toString()` with the JVM default time zone UTC
/// (`EEE MMM dd HH:mm:ss zzz yyyy`, e.g. `Tue Aug 29 20:15:46 UTC 2017`; milliseconds are dropped).
/// Instants outside years -9999..=9999 (the `time` crate range) render as the decimal millisecond count.
pub fn date_to_string(ms: i64) -> String {
    match utc_from_millis(ms) {
        Some(t) => format!(
            "{} {} {:02} {:02}:{:02}:{:02} UTC {}",
            weekday_abbrev(t.weekday()),
            month_abbrev(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.year()
        ),
        None => ms.to_string(),
    }
}

/// Java `Instant.ofEpochMilli(ms).toString()` (ISO-8601 UTC; seconds always present; `.SSS` only
/// when the milliseconds are not zero): `2016-12-01T08:00:00Z`, `2017-08-29T20:15:46.112Z`.
pub fn instant_to_string(ms: i64) -> String {
    match utc_from_millis(ms) {
        Some(t) => {
            let year = t.year();
            let year_text = if year > 9999 {
                format!("+{year}")
            } else if year < 0 {
                format!("-{:04}", -year)
            } else {
                format!("{year:04}")
            };
            let mut s = format!(
                "{}-{:02}-{:02}T{:02}:{:02}:{:02}",
                year_text,
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            );
            let millis = t.millisecond();
            if millis != 0 {
                s.push_str(&format!(".{millis:03}"));
            }
            s.push('Z');
            s
        }
        None => ms.to_string(),
    }
}

/// Java `UUID.toString()`: lower-case 8-4-4-4-12 hex.
pub fn uuid_to_string(b: &[u8; 16]) -> String {
    let h: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    )
}

/// proton-j `Binary.toString()`: printable ASCII (0x20..0x7E) except `\` as is, every other byte
/// as `\xNN` (two lower-case hex digits).
pub fn binary_to_string(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len());
    for &c in b {
        if c > 31 && c < 127 && c != b'\\' {
            s.push(c as char);
        } else {
            s.push_str(&format!("\\x{c:02x}"));
        }
    }
    s
}

/// Java `new BigDecimal(new BigInteger(unscaled), scale).toString()` for the Connect `Decimal`
/// logical type (`unscaled` is big-endian two's complement). `None` if it does not fit in i128.
pub fn big_decimal_to_string(unscaled: &[u8], scale: i32) -> Option<String> {
    if unscaled.is_empty() || unscaled.len() > 16 {
        return None;
    }
    let mut v: i128 = if unscaled[0] & 0x80 != 0 { -1 } else { 0 };
    for &b in unscaled {
        v = (v << 8) | i128::from(b);
    }
    let negative = v < 0;
    let digits = v.unsigned_abs().to_string();
    let adjusted = -(scale as i64) + (digits.len() as i64 - 1);
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    if scale >= 0 && adjusted >= -6 {
        let scale = scale as usize;
        if scale == 0 {
            out.push_str(&digits);
        } else if digits.len() > scale {
            out.push_str(&digits[..digits.len() - scale]);
            out.push('.');
            out.push_str(&digits[digits.len() - scale..]);
        } else {
            out.push_str("0.");
            for _ in digits.len()..scale {
                out.push('0');
            }
            out.push_str(&digits);
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('E');
        if adjusted >= 0 {
            out.push('+');
        }
        out.push_str(&adjusted.to_string());
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_like_java() {
        let cases: &[(f64, &str)] = &[
            (1.5, "1.5"),
            (1.0e7, "1.0E7"),
            (1.0e-4, "1.0E-4"),
            (25.5, "25.5"),
            (0.001, "0.001"),
            (0.0001234, "1.234E-4"),
            (9_999_999.0, "9999999.0"),
            (12_345_678.9, "1.23456789E7"),
            (100.0, "100.0"),
            (1.0, "1.0"),
            (-2.5, "-2.5"),
            (0.1, "0.1"),
            (0.3, "0.3"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1.0e23, "1.0E23"),
            (f64::MAX, "1.7976931348623157E308"),
            (f64::MIN_POSITIVE, "2.2250738585072014E-308"),
            (5e-324, "4.9E-324"),
            (2e-323, "2.0E-323"),
            (123456.789, "123456.789"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
        ];
        for (d, want) in cases {
            assert_eq!(double_to_string(*d), *want, "Double.toString({d:e})");
        }
    }

    #[test]
    fn floats_like_java() {
        let cases: &[(f32, &str)] = &[
            (1.5, "1.5"),
            (0.1, "0.1"),
            (1.0e7, "1.0E7"),
            (3.4028235e38, "3.4028235E38"),
            (1.4e-45, "1.4E-45"),
            (25.5, "25.5"),
            (1.0e-4, "1.0E-4"),
            (123.456, "123.456"),
        ];
        for (f, want) in cases {
            assert_eq!(float_to_string(*f), *want, "Float.toString({f:e})");
        }
    }

    #[test]
    fn dates_like_java() {
        // 2017-08-29T20:15:46.112Z, the spec's verified example.
        assert_eq!(
            date_to_string(1_504_037_746_112),
            "Tue Aug 29 20:15:46 UTC 2017"
        );
        assert_eq!(date_to_string(0), "Thu Jan 01 00:00:00 UTC 1970");
        assert_eq!(date_to_string(-1), "Wed Dec 31 23:59:59 UTC 1969");
        assert_eq!(
            instant_to_string(1_504_037_746_112),
            "2017-08-29T20:15:46.112Z"
        );
        assert_eq!(instant_to_string(1_480_579_200_000), "2016-12-01T08:00:00Z");
        assert_eq!(
            instant_to_string(1_480_579_200_007),
            "2016-12-01T08:00:00.007Z"
        );
        assert_eq!(instant_to_string(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn uuid_binary_decimal() {
        let u = [
            0x12, 0x3e, 0x45, 0x67, 0xe8, 0x9b, 0x12, 0xd3, 0xa4, 0x56, 0x42, 0x66, 0x14, 0x17,
            0x40, 0x00,
        ];
        assert_eq!(uuid_to_string(&u), "123e4567-e89b-12d3-a456-426614174000");
        assert_eq!(
            binary_to_string(b"ab\\c\x00\xff~\x7f"),
            "ab\\x5cc\\x00\\xff~\\x7f"
        );
        assert_eq!(big_decimal_to_string(&[0x04, 0xd2], 2).unwrap(), "12.34");
        assert_eq!(big_decimal_to_string(&[0xfb, 0x2e], 2).unwrap(), "-12.34");
        assert_eq!(big_decimal_to_string(&[0x01], 3).unwrap(), "0.001");
        assert_eq!(big_decimal_to_string(&[0x01], 10).unwrap(), "1E-10");
        assert_eq!(big_decimal_to_string(&[0x7b], -2).unwrap(), "1.23E+4");
        assert_eq!(big_decimal_to_string(&[0x00], 0).unwrap(), "0");
    }
}

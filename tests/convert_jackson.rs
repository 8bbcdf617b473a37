//! The JSON writer against Jackson itself (Debian's Jackson 2.14, the version the reference bytes
//! were verified with): string escaping, doubles, floats and binary as `ObjectMapper` writes the
//! `JsonNode`s Kafka's JsonConverter builds. Skipped with a notice without a JDK or the jars.

use crate::harness;
use harness::{hex, Gen};

use iotconnect::connect::json;

fn strings() -> Vec<String> {
    let mut v: Vec<String> = vec![
        String::new(),
        "plain".into(),
        "\"\\/".into(),
        (0u32..0x20).filter_map(char::from_u32).collect(),
        "\u{7F}\u{80}\u{9F}\u{A0}\u{FF}\u{2028}\u{2029}\u{FEFF}\u{FFFD}\u{FFFF}".into(),
        "한국어 café €".into(),
        "\u{1F511}\u{10000}\u{10FFFF}".into(),
        r#"{"scope":"device","type":"sas","issuer":"iothub"}"#.into(),
    ];
    let mut g = Gen(99);
    let pool: Vec<char> = (0u32..0x80)
        .chain([
            0xA9, 0x7FF, 0x800, 0xD7FF, 0xE000, 0xFFFD, 0x1F600, 0x10FFFF, 0x2028,
        ])
        .filter_map(char::from_u32)
        .collect();
    for _ in 0..2000 {
        let len = (g.next() % 20) as usize;
        v.push(
            (0..len)
                .map(|_| pool[(g.next() % pool.len() as u64) as usize])
                .collect(),
        );
    }
    v
}

#[test]
fn strings_escape_like_jackson() {
    let Some(jdk) = harness::Jdk::compile_with_jackson() else {
        return;
    };
    let ss = strings();
    let input: String = ss
        .iter()
        .map(|s| format!("{}\n", hex(s.as_bytes())))
        .collect();
    let out = jdk.run_jackson(&["strings"], &input);
    assert_eq!(out.lines().count(), ss.len());
    for (s, want) in ss.iter().zip(out.lines()) {
        let mut ours = Vec::new();
        json::write_str(&mut ours, s);
        assert_eq!(
            hex(&ours),
            want,
            "{s:?}: ours {}",
            String::from_utf8_lossy(&ours)
        );
    }
}

#[test]
fn numbers_and_binary_like_jackson() {
    let Some(jdk) = harness::Jdk::compile_with_jackson() else {
        return;
    };
    let ds = [
        0.0,
        -0.0,
        1.5,
        25.5,
        1.0e7,
        1.0e-4,
        0.1,
        123_456.789,
        f64::MAX,
        5e-324,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        964_945_328_786_327_936.0,
    ];
    let input: String = ds
        .iter()
        .map(|d| format!("{:016x}\n", d.to_bits()))
        .collect();
    let out = jdk.run_jackson(&["doubles"], &input);
    for (d, want) in ds.iter().zip(out.lines()) {
        let mut ours = Vec::new();
        json::write_f64(&mut ours, *d);
        assert_eq!(
            hex(&ours),
            want,
            "double {d:e}: ours {}",
            String::from_utf8_lossy(&ours)
        );
    }
    let fs = [
        0.0f32,
        1.5,
        0.1,
        1.0e10,
        123_456_789.0,
        f32::NAN,
        f32::INFINITY,
        1.4e-45,
    ];
    let input: String = fs
        .iter()
        .map(|f| format!("{:08x}\n", f.to_bits()))
        .collect();
    let out = jdk.run_jackson(&["floats"], &input);
    for (f, want) in fs.iter().zip(out.lines()) {
        let mut ours = Vec::new();
        json::write_f32(&mut ours, *f);
        assert_eq!(
            hex(&ours),
            want,
            "float {f:e}: ours {}",
            String::from_utf8_lossy(&ours)
        );
    }
    let mut g = Gen(5);
    let blobs: Vec<Vec<u8>> = (0..200)
        .map(|i| (0..i % 70).map(|_| g.next() as u8).collect())
        .collect();
    let input: String = blobs.iter().map(|b| format!("{}\n", hex(b))).collect();
    let out = jdk.run_jackson(&["binary"], &input);
    for (b, want) in blobs.iter().zip(out.lines()) {
        let mut ours = Vec::new();
        json::write_base64(&mut ours, b);
        assert_eq!(hex(&ours), want, "{} bytes", b.len());
    }
}

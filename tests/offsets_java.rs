//! The offsets file against the JDK itself: files we write are read by `ObjectInputStream`
//! (as the Java worker's `FileOffsetBackingStore.load` does) and files the JDK writes with
//! `ObjectOutputStream` (as `save` does) are read by us, byte for byte. Skipped with a notice
//! when `javac` is absent.

use crate::harness;
use harness::hex;

use std::collections::BTreeMap;

use iotconnect::connect::Value;
use iotconnect::offsets::file::{decode, encode, Entry};
use iotconnect::offsets::OffsetStore;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn as_lines(entries: &[Entry]) -> String {
    entries
        .iter()
        .map(|(k, v)| {
            format!(
                "{} {}\n",
                hex(k),
                v.as_ref().map_or("-".to_string(), |v| hex(v))
            )
        })
        .collect()
}

fn parse_lines(s: &str) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
    s.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(' ').unwrap();
            (unhex(k), if v == "-" { None } else { Some(unhex(v)) })
        })
        .collect()
}

fn sample(n: usize) -> Vec<Entry> {
    (0..n)
        .map(|i| {
            let key = format!(
                r#"["AzureIotHub-é\uD83D\uDD11",{{"EventHubName":"iothub-ehub-myhub","EventHubPartition":"{i}"}}]"#
            )
            .into_bytes();
            let value = match i % 5 {
                0 => None,
                1 => Some(Vec::new()),
                _ => Some(format!(r#"{{"EventHubOffset":"{}"}}"#, i * 8_589_934_592).into_bytes()),
            };
            (key, value)
        })
        .collect()
}

#[test]
fn java_reads_what_we_write() {
    let Some(jdk) = harness::Jdk::compile() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for n in [0, 1, 2, 12, 13, 30, 100] {
        let entries = sample(n);
        let path = dir.path().join(format!("ours-{n}.offsets"));
        std::fs::write(&path, encode(&entries)).unwrap();
        let out = jdk.run(&["read", path.to_str().unwrap()], "");
        let want: BTreeMap<_, _> = entries.into_iter().collect();
        assert_eq!(parse_lines(&out), want, "{n} entries");
    }
}

#[test]
fn we_read_what_java_writes_byte_for_byte() {
    let Some(jdk) = harness::Jdk::compile() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for n in [0, 1, 3, 12, 13, 25, 49, 100] {
        let entries = sample(n);
        let path = dir.path().join(format!("java-{n}.offsets"));
        jdk.run(&["write", path.to_str().unwrap()], &as_lines(&entries));
        let bytes = std::fs::read(&path).unwrap();
        let decoded = decode(&bytes).unwrap();
        let want: BTreeMap<_, _> = entries.into_iter().collect();
        let got: BTreeMap<_, _> = decoded.iter().cloned().collect();
        assert_eq!(got, want, "{n} entries");
        // In the JDK's (random) entry order, our encoder reproduces the JDK's bytes exactly.
        assert_eq!(
            hex(&encode(&decoded)),
            hex(&bytes),
            "{n} entries re-encoded"
        );
    }
}

#[test]
fn a_store_flush_is_readable_by_java() {
    let Some(jdk) = harness::Jdk::compile() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("connect.offsets");
    // Start from a file the JDK wrote, as after an upgrade from the Java worker.
    let legacy = br#"["AzureIotHubConnector",{"EventHubPartitionKey":"0"}]"#.to_vec();
    let java_written: Vec<Entry> = vec![
        (legacy.clone(), Some(br#"{"EventHubOffset":"5"}"#.to_vec())),
        (
            br#"["AzureIotHubConnector",{"EventHubName":"hub","EventHubPartition":"0"}]"#.to_vec(),
            Some(br#"{"EventHubOffset":"100"}"#.to_vec()),
        ),
    ];
    jdk.run(&["write", path.to_str().unwrap()], &as_lines(&java_written));
    let mut store = OffsetStore::load(&path).unwrap();
    let p0 = [("EventHubName", "hub"), ("EventHubPartition", "0")];
    let p1 = [("EventHubName", "hub"), ("EventHubPartition", "1")];
    assert_eq!(
        store.get("AzureIotHubConnector", &p0),
        Some(vec![(
            "EventHubOffset".to_string(),
            Value::String("100".into())
        )])
    );
    store.put(
        "AzureIotHubConnector",
        &p0,
        Some(&[("EventHubOffset", Value::String("200".into()))]),
    );
    store.put(
        "AzureIotHubConnector",
        &p1,
        Some(&[("EventHubOffset", Value::String("7".into()))]),
    );
    assert!(store.flush(&path).unwrap());

    let out = jdk.run(&["read", path.to_str().unwrap()], "");
    let got = parse_lines(&out);
    assert_eq!(got.len(), 3);
    assert_eq!(
        got[&legacy],
        Some(br#"{"EventHubOffset":"5"}"#.to_vec()),
        "legacy entry kept verbatim"
    );
    assert_eq!(
        got[&br#"["AzureIotHubConnector",{"EventHubName":"hub","EventHubPartition":"0"}]"#
            .to_vec()],
        Some(br#"{"EventHubOffset":"200"}"#.to_vec())
    );
    assert_eq!(
        got[&br#"["AzureIotHubConnector",{"EventHubName":"hub","EventHubPartition":"1"}]"#
            .to_vec()],
        Some(br#"{"EventHubOffset":"7"}"#.to_vec())
    );
}

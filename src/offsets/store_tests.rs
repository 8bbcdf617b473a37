//! Unit tests of `offsets::store`.

use super::*;

const NAME: &str = "AzureIotHubConnector";

fn part(n: &str) -> [(&'static str, String); 2] {
    [
        ("EventHubName", "iothub-ehub-myhub".to_string()),
        ("EventHubPartition", n.to_string()),
    ]
}

fn p<'a>(x: &'a [(&'static str, String); 2]) -> [(&'a str, &'a str); 2] {
    [(x[0].0, x[0].1.as_str()), (x[1].0, x[1].1.as_str())]
}

fn offset(o: &str) -> [(&'static str, Value); 1] {
    [("EventHubOffset", Value::String(o.to_string()))]
}

#[test]
fn key_and_value_bytes_match_java() {
    let pt = part("0");
    assert_eq!(
        key_bytes(NAME, &p(&pt)),
        br#"["AzureIotHubConnector",{"EventHubName":"iothub-ehub-myhub","EventHubPartition":"0"}]"#
    );
    assert_eq!(
        value_bytes(&offset("8589934592")),
        br#"{"EventHubOffset":"8589934592"}"#
    );
    assert_eq!(
        key_bytes("c\"\u{1F511}", &[("k/é", "\n")]),
        "[\"c\\\"\\uD83D\\uDD11\",{\"k/é\":\"\\n\"}]".as_bytes()
    );
    assert_eq!(
        value_bytes(&[
            ("position", Value::Int64(1_234_567_890_123)),
            ("f", Value::Float64(1.5)),
            ("n", Value::Null)
        ]),
        br#"{"position":1234567890123,"f":1.5,"n":null}"#
    );
}

#[test]
fn put_get_flush_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("connect.offsets");
    let mut store = OffsetStore::load(&path).unwrap();
    assert!(store.is_empty() && !store.is_dirty());
    let (p0, p1) = (part("0"), part("1"));
    store.put(NAME, &p(&p0), Some(&offset("100")));
    store.put(NAME, &p(&p1), Some(&offset("200")));
    store.put(NAME, &p(&p0), Some(&offset("150")));
    assert_eq!(store.len(), 2);
    assert!(store.is_dirty());
    assert!(store.flush(&path).unwrap());
    assert!(!store.flush(&path).unwrap(), "nothing new: no write");

    let back = OffsetStore::load(&path).unwrap();
    assert_eq!(
        back.get(NAME, &p(&p0)),
        Some(vec![(
            "EventHubOffset".to_string(),
            Value::String("150".into())
        )])
    );
    assert_eq!(
        back.get(NAME, &p(&p1)).unwrap()[0].1,
        Value::String("200".into())
    );
    assert_eq!(back.get(NAME, &p(&part("2"))), None);
    assert_eq!(back.get("other", &p(&p0)), None);
    assert_eq!(back.entries(), store.entries());
}

#[test]
fn original_key_bytes_are_kept_and_found_by_json_equality() {
    // A key written with the partition keys in the other order and with whitespace.
    let odd_key = br#"["AzureIotHubConnector", {"EventHubPartition":"0","EventHubName":"iothub-ehub-myhub"}]"#.to_vec();
    let legacy = br#"["AzureIotHubConnector",{"EventHubPartitionKey":"0"}]"#.to_vec();
    let envelope = br#"{"schema":null,"payload":["AzureIotHubConnector",{"EventHubName":"iothub-ehub-myhub","EventHubPartition":"3"}]}"#.to_vec();
    let mut store = OffsetStore::from_entries(vec![
        (legacy.clone(), Some(br#"{"EventHubOffset":"1"}"#.to_vec())),
        (
            odd_key.clone(),
            Some(br#"{"EventHubOffset":"42"}"#.to_vec()),
        ),
        (
            envelope,
            Some(br#"{"schema":null,"payload":{"EventHubOffset":"7"}}"#.to_vec()),
        ),
    ]);
    assert!(!store.is_dirty());
    let p0 = part("0");
    assert_eq!(
        store.get(NAME, &p(&p0)).unwrap()[0].1,
        Value::String("42".into())
    );
    assert_eq!(
        store.get(NAME, &p(&part("3"))).unwrap()[0].1,
        Value::String("7".into())
    );
    // Updating replaces the odd key by the bytes Java looks up; the legacy entry is untouched.
    store.put(NAME, &p(&p0), Some(&offset("43")));
    assert_eq!(store.len(), 3);
    assert_eq!(store.entries()[0].0, legacy);
    assert!(store.entries().iter().all(|(k, _)| *k != odd_key));
    assert_eq!(
        store.get(NAME, &p(&p0)).unwrap()[0].1,
        Value::String("43".into())
    );
    assert!(store
        .entries()
        .iter()
        .any(|(k, _)| *k == key_bytes(NAME, &p(&p0))));
}

#[test]
fn tombstones_read_as_absent_and_survive_rewrite() {
    let p0 = part("0");
    let mut store = OffsetStore::new();
    store.put(NAME, &p(&p0), None);
    assert_eq!(store.get(NAME, &p(&p0)), None);
    assert_eq!(store.entries()[0].1, None);
}

#[test]
fn show_and_reset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o");
    let mut store = OffsetStore::new();
    for n in ["0", "1"] {
        store.put(NAME, &p(&part(n)), Some(&offset(n)));
    }
    store.put("other", &[("x", "y")], None);
    store.flush(&path).unwrap();

    let mut out = Vec::new();
    show(&path, &mut out).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        concat!(
            r#"{"key":["AzureIotHubConnector",{"EventHubName":"iothub-ehub-myhub","EventHubPartition":"0"}],"value":{"EventHubOffset":"0"}}"#,
            "\n",
            r#"{"key":["AzureIotHubConnector",{"EventHubName":"iothub-ehub-myhub","EventHubPartition":"1"}],"value":{"EventHubOffset":"1"}}"#,
            "\n",
            r#"{"key":["other",{"x":"y"}],"value":null}"#,
            "\n"
        )
    );

    assert_eq!(reset(&path, NAME, Some("1")).unwrap(), 1);
    assert_eq!(reset(&path, NAME, Some("1")).unwrap(), 0);
    let back = OffsetStore::load(&path).unwrap();
    assert_eq!(back.len(), 2);
    assert!(back.get(NAME, &p(&part("0"))).is_some());
    assert_eq!(reset(&path, NAME, None).unwrap(), 1);
    assert_eq!(OffsetStore::load(&path).unwrap().len(), 1);
    assert_eq!(reset(&dir.path().join("missing"), NAME, None).unwrap(), 0);
    let err = show(&dir.path().join("missing"), &mut Vec::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing"), "{err}");
    assert!(!dir.path().join("missing").exists());
}

#[test]
fn show_on_a_damaged_file_prints_what_it_can_then_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o");
    let mut store = OffsetStore::new();
    store.put(NAME, &p(&part("0")), Some(&offset("5")));
    store.put(NAME, &p(&part("1")), Some(&offset("6")));
    let bytes = file::encode(store.entries());
    std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
    let mut out = Vec::new();
    let err = show(&path, &mut out).unwrap_err().to_string();
    assert_eq!(String::from_utf8(out).unwrap().lines().count(), 1);
    assert!(err.contains("damaged"), "{err}");
    assert!(
        reset(&path, NAME, None).is_err(),
        "reset refuses a damaged file"
    );
    assert!(matches!(
        OffsetStore::load(&path),
        Err(OffsetsError::Invalid { .. })
    ));
}

#[test]
fn the_way_out_fits_what_was_being_done() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o");
    std::fs::write(&path, [0xACu8, 0xED, 0x00, 0x05, 0x73]).unwrap();
    let show_err = show(&path, &mut Vec::new()).unwrap_err().to_string();
    assert!(show_err.contains("damaged"), "{show_err}");
    assert!(!show_err.contains("offsets show"), "{show_err}");
    let reset_err = reset(&path, NAME, None).unwrap_err().to_string();
    assert!(!reset_err.contains("offsets reset"), "{reset_err}");
    assert!(reset_err.contains("offsets show"), "{reset_err}");
    let start_err = OffsetStore::load(&path).unwrap_err().to_string();
    assert!(start_err.contains("refusing to start"), "{start_err}");
}

#[test]
fn a_corrupt_value_in_a_valid_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o");
    let key = key_bytes(NAME, &p(&part("0")));
    for bad in [
        &b"not json"[..],
        b"\"a string\"",
        b"[1]",
        br#"{"schema":null,"payload":7}"#,
    ] {
        let entries = vec![
            (key.clone(), Some(br#"{"EventHubOffset":"5"}"#.to_vec())),
            (b"[\"x\",{}]".to_vec(), Some(bad.to_vec())),
        ];
        std::fs::write(&path, file::encode(&entries)).unwrap();
        let e = OffsetStore::load(&path).unwrap_err();
        assert!(matches!(e, OffsetsError::BadValue { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("damaged") && msg.contains("[\"x\",{}]"),
            "{msg}"
        );
    }
    for good in [
        &br#"{"EventHubOffset":"5"}"#[..],
        b"null",
        br#"{"schema":null,"payload":{"a":1}}"#,
    ] {
        std::fs::write(&path, file::encode(&[(key.clone(), Some(good.to_vec()))])).unwrap();
        OffsetStore::load(&path).unwrap();
    }
}

#[test]
fn reset_fails_while_the_file_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o");
    let held = super::super::lock::OffsetsLock::acquire(&path).unwrap();
    let e = reset(&path, NAME, None).unwrap_err();
    assert!(matches!(e, OffsetsError::Locked { .. }), "{e}");
    drop(held);
    assert_eq!(reset(&path, NAME, None).unwrap(), 0);
}

#[test]
fn failed_flush_keeps_changes_pending() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gone").join("o");
    let mut store = OffsetStore::new();
    store.put(NAME, &p(&part("0")), Some(&offset("5")));
    assert!(store.flush(&path).is_err());
    assert!(store.is_dirty());
    std::fs::create_dir(dir.path().join("gone")).unwrap();
    assert!(store.flush(&path).unwrap());
}

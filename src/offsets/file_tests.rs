//! Unit tests of `offsets::file`.

use super::*;

fn hex(s: &str) -> Vec<u8> {
    let clean: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    (0..clean.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&clean[i..i + 2], 16).unwrap())
        .collect()
}

/// kafka-connect.md §4.4 "Tiny", 139 bytes written by the JDK.
const TINY: &str = "aced 0005 7372 0011 6a61 7661 2e75 7469 6c2e 4861 7368 4d61 7005 07da c1c3 1660
    d103 0002 4600 0a6c 6f61 6446 6163 746f 7249 0009 7468 7265 7368 6f6c 6478 703f
    4000 0000 0000 0c77 0800 0000 1000 0000 0175 7200 025b 42ac f317 f806 0854 e002
    0000 7870 0000 000f 5b22 6322 2c7b 2270 223a 2230 227d 5d75 7100 7e00 0200 0000
    097b 226f 223a 2231 227d 78";

const PREFIX: &str =
    "ACED0005 7372 0011 6A6176612E7574696C2E486173684D6170 0507DAC1C31660D1 03 0002
    46 000A 6C6F6164466163746F72 49 0009 7468726573686F6C64 78 70";

fn iothub_bytes() -> Vec<u8> {
    let mut b = hex(&TINY[..TINY.find("0000 7870").unwrap()]);
    b.truncate(0x50);
    b.extend(hex("0175 7200 025b 42ac f317 f806 0854 e002
         0000 7870 0000 0055 5b22 417a 7572 6549
         6f74 4875 6243 6f6e 6e65 6374 6f72 222c
         7b22 4576 656e 7448 7562 4e61 6d65 223a
         2269 6f74 6875 622d 6568 7562 2d6d 7968
         7562 222c 2245 7665 6e74 4875 6250 6172
         7469 7469 6f6e 223a 2230 227d 5d75 7100
         7e00 0200 0000 1f7b 2245 7665 6e74 4875
         624f 6666 7365 7422 3a22 3835 3839 3933
         3435 3932 227d 78"));
    b
}

#[test]
fn fixed_prefix_is_63_bytes() {
    assert_eq!(hex(PREFIX).len(), 63);
    assert_eq!(&encode(&[])[..63], &hex(PREFIX)[..]);
}

#[test]
fn golden_tiny() {
    let want = hex(TINY);
    assert_eq!(want.len(), 139);
    let entries = vec![(
        br#"["c",{"p":"0"}]"#.to_vec(),
        Some(br#"{"o":"1"}"#.to_vec()),
    )];
    assert_eq!(encode(&entries), want);
    assert_eq!(decode(&want).unwrap(), entries);
}

#[test]
fn golden_empty() {
    let mut want = hex(PREFIX);
    want.extend(hex("3F400000 00000000 7708 00000010 00000000 78"));
    assert_eq!(want.len(), 82);
    assert_eq!(encode(&[]), want);
    assert_eq!(decode(&want).unwrap(), vec![]);
}

#[test]
fn golden_iothub() {
    let want = iothub_bytes();
    assert_eq!(want.len(), 231);
    let key =
        br#"["AzureIotHubConnector",{"EventHubName":"iothub-ehub-myhub","EventHubPartition":"0"}]"#;
    assert_eq!(key.len(), 85);
    let entries = vec![(
        key.to_vec(),
        Some(br#"{"EventHubOffset":"8589934592"}"#.to_vec()),
    )];
    assert_eq!(encode(&entries), want);
    assert_eq!(decode(&want).unwrap(), entries);
}

#[test]
fn golden_tombstone() {
    let entries = vec![
        (
            br#"["c",{"p":"0"}]"#.to_vec(),
            Some(br#"{"o":"1"}"#.to_vec()),
        ),
        (br#"["c",{"p":"1"}]"#.to_vec(), None),
    ];
    let bytes = encode(&entries);
    let mut tail = hex("75 71 00 7E 00 02 00 00 00 0F");
    tail.extend_from_slice(br#"["c",{"p":"1"}]"#);
    tail.extend(hex("70 78"));
    assert!(bytes.ends_with(&tail));
    assert_eq!(decode(&bytes).unwrap(), entries);
}

#[test]
fn header_values_follow_the_table() {
    for (n, t, c) in [
        (0, 0, 16),
        (1, 12, 16),
        (12, 12, 16),
        (13, 24, 32),
        (24, 24, 32),
        (25, 48, 64),
        (48, 48, 64),
        (49, 96, 128),
        (96, 96, 128),
        (100, 192, 256),
    ] {
        assert_eq!(header_values(n), (t, c), "{n} mappings");
    }
    let entries: Vec<Entry> = (0..13).map(|i| (vec![i], Some(vec![i]))).collect();
    let b = encode(&entries);
    assert_eq!(&b[0x43..0x47], &24u32.to_be_bytes());
    assert_eq!(&b[0x49..0x4D], &32u32.to_be_bytes());
    assert_eq!(decode(&b).unwrap(), entries);
}

#[test]
fn trailing_bytes_ignored_and_general_references_resolved() {
    let mut b = hex(TINY);
    b.extend_from_slice(b"garbage");
    assert_eq!(decode(&b).unwrap().len(), 1);

    // Two mappings whose second value is a back-reference to the first value array
    // (handle 0x7E0004: desc, map, [B desc, key1, value1 = 0x7E0004).
    let mut b = hex(PREFIX);
    b.extend(hex("3F400000 0000000C 7708 00000010 00000002"));
    b.extend(hex(
        "75 72 0002 5B42 ACF317F8060854E0 02 0000 78 70 00000001 41",
    ));
    b.extend(hex("75 71 007E0002 00000001 56"));
    b.extend(hex("75 71 007E0002 00000001 42"));
    b.extend(hex("71 007E0004"));
    b.push(0x78);
    assert_eq!(
        decode(&b).unwrap(),
        vec![
            (b"A".to_vec(), Some(b"V".to_vec())),
            (b"B".to_vec(), Some(b"V".to_vec()))
        ]
    );
}

#[test]
fn split_block_data_is_joined() {
    let mut b = hex(PREFIX);
    b.extend(hex("3F400000 00000000 7704 00000010 7704 00000000 78"));
    assert_eq!(decode(&b).unwrap(), vec![]);
}

#[test]
fn every_truncation_is_an_error() {
    let full = iothub_bytes();
    for n in 0..full.len() {
        let err = decode(&full[..n]).unwrap_err();
        match (n, &err) {
            (0, OffsetFileError::Empty) => {}
            (_, OffsetFileError::Truncated { .. }) => {}
            _ => panic!("prefix of {n} bytes gave {err:?}"),
        }
    }
    let (salvaged, _) = decode_salvage(&full[..full.len() - 1]).unwrap_err();
    assert_eq!(salvaged.len(), 1, "the complete entry is salvaged");
}

#[test]
fn corrupt_inputs_are_rejected_with_reasons() {
    let err = decode(b"EventHubOffset=1\n").unwrap_err().to_string();
    assert!(err.contains("invalid stream header"), "{err}");
    let mut other_class = hex(TINY);
    other_class[0x08..0x19].copy_from_slice(b"java.util.TreeMap");
    let err = decode(&other_class).unwrap_err().to_string();
    assert!(err.contains("java.util.TreeMap"), "{err}");
    let mut bad_suid = hex(TINY);
    bad_suid[0x19] ^= 1;
    assert!(decode(&bad_suid)
        .unwrap_err()
        .to_string()
        .contains("serialVersionUID"));
    let mut string_value = hex(TINY);
    string_value[0x77] = TC_STRING;
    assert!(decode(&string_value)
        .unwrap_err()
        .to_string()
        .contains("String"));
    let mut null_key = hex(PREFIX);
    null_key.extend(hex("3F400000 0000000C 7708 00000010 00000001 70 70 78"));
    assert!(decode(&null_key)
        .unwrap_err()
        .to_string()
        .contains("null key"));
    let mut zero_lf = hex(TINY);
    zero_lf[0x3F] = 0;
    zero_lf[0x40] = 0;
    assert!(decode(&zero_lf)
        .unwrap_err()
        .to_string()
        .contains("load factor"));
    let mut negative = hex(TINY);
    negative[0x4D..0x51].copy_from_slice(&(-1i32).to_be_bytes());
    assert!(decode(&negative)
        .unwrap_err()
        .to_string()
        .contains("mappings"));
    let mut no_end = hex(TINY);
    *no_end.last_mut().unwrap() = 0x79;
    assert!(decode(&no_end)
        .unwrap_err()
        .to_string()
        .contains("TC_ENDBLOCKDATA"));
}

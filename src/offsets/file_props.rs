//! Property tests of the offsets-file codec: no panic and bounded output on any input, and the
//! encode → decode round trip.

use super::*;
use proptest::prelude::*;
use std::time::{Duration, Instant};

fn entries() -> impl Strategy<Value = Vec<Entry>> {
    proptest::collection::vec(
        (
            proptest::collection::vec(any::<u8>(), 0..64),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
        ),
        0..24,
    )
}

fn decoded_size(e: &[Entry]) -> usize {
    e.iter()
        .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
        .sum()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn encode_then_decode_is_the_identity(e in entries()) {
        prop_assert_eq!(decode(&encode(&e)).unwrap(), e);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let t0 = Instant::now();
        if let Ok(e) = decode(&bytes) {
            prop_assert!(decoded_size(&e) <= bytes.len() * EXPANSION_LIMIT + EXPANSION_SLACK);
        }
        prop_assert!(t0.elapsed() < Duration::from_secs(1));
    }

    /// Damage to a real file (byte flips, truncation, insertion) is an error or a smaller map,
    /// never a panic or an unbounded result.
    #[test]
    fn damaged_files_never_panic(
        e in entries(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
    ) {
        let mut bytes = encode(&e);
        for (at, b, kind) in edits {
            if bytes.is_empty() {
                break;
            }
            let i = at.index(bytes.len());
            match kind {
                0 => bytes[i] = b,
                1 => bytes.truncate(i),
                _ => bytes.insert(i, b),
            }
        }
        let salvaged = match decode_salvage(&bytes) {
            Ok(e) | Err((e, _)) => e,
        };
        prop_assert!(decoded_size(&salvaged) <= bytes.len() * EXPANSION_LIMIT + EXPANSION_SLACK);
    }
}

/// A crafted 10 MB file: one 1 MB array, then ~1.8 million back-references to it (each 5 bytes on
/// disk, 1 MB decoded). Decoding must stop at the expansion budget instead of allocating terabytes.
#[test]
fn back_reference_bomb_is_refused_within_its_budget() {
    let one = encode(&[(vec![7u8; 1 << 20], None)]);
    // encode writes: header … entry count (4 bytes) … TC_ARRAY … bytes, TC_NULL, TC_ENDBLOCKDATA.
    let mut bytes = one[..one.len() - 2].to_vec();
    let refs = (10 << 20) / 10;
    // After the 63-byte fixed prefix: loadFactor, threshold, block header (2), buckets, mappings.
    let count_at = 63 + 4 + 4 + 2 + 4;
    bytes[count_at..count_at + 4].copy_from_slice(&(refs as u32 + 1).to_be_bytes());
    bytes.push(TC_NULL);
    for _ in 0..refs {
        // key: a reference to the 1 MB array (handle 0x7E0003), value: null
        bytes.push(TC_REFERENCE);
        bytes.extend_from_slice(&(BASE_HANDLE + 3).to_be_bytes());
        bytes.push(TC_NULL);
    }
    bytes.push(TC_ENDBLOCKDATA);
    assert!(bytes.len() > 6 << 20);
    let t0 = Instant::now();
    let err = decode(&bytes).unwrap_err().to_string();
    assert!(err.contains("back-references"), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    let (salvaged, _) = decode_salvage(&bytes).unwrap_err();
    assert!(decoded_size(&salvaged) <= bytes.len() * EXPANSION_LIMIT + EXPANSION_SLACK);
}

//! Java's `Utils.murmur2` and the default partitioner's key → partition choice
//! (`toPositive(murmur2(key)) % partitions`), so records we key (offsets, configs, status) land on the
//! partition a Java producer would choose, and a compacted topic keeps one value per key.
//!
//! librdkafka's `partitioner=murmur2_random` is documented as the same function; the integration test
//! `tests/distributed_offsets.rs` checks that the partition librdkafka picked equals [`partition`].

/// MurmurHash2 with Kafka's seed `0x9747b28c`, exactly as `org.apache.kafka.common.utils.Utils.murmur2`
/// (Java `int` arithmetic: wrapping, `>>>` = logical shift).
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let chunks = data.chunks_exact(4);
    let rest = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    // Java sign-extends nothing here: `(data[i] & 0xff)`.
    match rest.len() {
        3 => {
            h ^= (rest[2] as u32) << 16;
            h ^= (rest[1] as u32) << 8;
            h ^= rest[0] as u32;
            h = h.wrapping_mul(M);
        }
        2 => {
            h ^= (rest[1] as u32) << 8;
            h ^= rest[0] as u32;
            h = h.wrapping_mul(M);
        }
        1 => {
            h ^= rest[0] as u32;
            h = h.wrapping_mul(M);
        }
        _ => {}
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Java `Utils.toPositive`: clears the sign bit (not `abs`).
pub fn to_positive(n: i32) -> i32 {
    n & 0x7fff_ffff
}

/// The partition Java's default partitioner (and librdkafka's `murmur2_random`) picks for a key.
pub fn partition(key: &[u8], partitions: i32) -> i32 {
    assert!(partitions > 0, "a topic has at least one partition");
    to_positive(murmur2(key)) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectors of Apache Kafka's `UtilsTest.testMurmur2` (Java's own results).
    #[test]
    fn matches_java_utils_murmur2_vectors() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (k, want) in cases {
            assert_eq!(murmur2(k), want, "{}", String::from_utf8_lossy(k));
        }
    }

    #[test]
    fn to_positive_clears_the_sign_bit_only() {
        assert_eq!(to_positive(-1), i32::MAX);
        assert_eq!(to_positive(i32::MIN), 0);
        assert_eq!(to_positive(5), 5);
        // -973932308 & 0x7fffffff
        assert_eq!(partition(b"21", 25), (-973_932_308i32 & 0x7fff_ffff) % 25);
    }

    #[test]
    fn partition_is_in_range_and_stable() {
        let mut key = Vec::new();
        for i in 0..2000u32 {
            key.push((i.wrapping_mul(2_654_435_761) >> 7) as u8);
            let n = (i % 97 + 1) as i32;
            let p = partition(&key, n);
            assert!((0..n).contains(&p));
            assert_eq!(p, partition(&key.clone(), n));
        }
    }
}

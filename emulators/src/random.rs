//! Random identifiers and token material.
//!
//! The emulators have no RNG crate: std's `RandomState` (seeded from the OS) mixed with a counter
//! and the time through SHA-256 is plenty for unique ids and throwaway keys in tests and demos.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

static COUNTER: AtomicU64 = AtomicU64::new(0);

pub(crate) fn random_bytes(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let mut hasher = Sha256::new();
        for _ in 0..2 {
            let mut seed = RandomState::new().build_hasher();
            seed.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
            hasher.update(seed.finish().to_le_bytes());
        }
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_nanos());
        hasher.update(nanos.to_le_bytes());
        out.extend_from_slice(&hasher.finalize());
    }
    out.truncate(len);
    out
}

pub(crate) fn hex(byte_count: usize) -> String {
    use std::fmt::Write as _;
    random_bytes(byte_count).iter().fold(String::with_capacity(byte_count * 2), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}

pub(crate) fn base62(len: usize) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    random_bytes(len).iter().map(|byte| char::from(ALPHABET[usize::from(*byte) % ALPHABET.len()])).collect()
}

/// A random (version 4) UUID in its usual text form.
pub(crate) fn uuid_v4() -> String {
    let mut bytes = random_bytes(16);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_well_formed_and_distinct() {
        let first = uuid_v4();
        let second = uuid_v4();
        assert_ne!(first, second);
        assert_eq!(first.len(), 36);
        assert_eq!(&first[14..15], "4");
    }

    #[test]
    fn lengths_are_exact() {
        assert_eq!(random_bytes(70).len(), 70);
        assert_eq!(hex(10).len(), 20);
        assert_eq!(base62(27).len(), 27);
    }
}

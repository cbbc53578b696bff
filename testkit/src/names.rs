//! Unique names for test objects.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A random lowercase alphanumeric string (not cryptographic; for unique names).
pub fn random_suffix(len: usize) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(len);
    let mut round = 0u64;
    while out.len() < len {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_u64(round);
        h.write_u32(std::process::id());
        h.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default());
        let mut v = h.finish();
        for _ in 0..12 {
            if out.len() >= len {
                break;
            }
            let idx = usize::try_from(v % 36).unwrap_or(0);
            out.push(char::from(ALPHABET[idx]));
            v /= 36;
        }
        round += 1;
    }
    out
}

/// `prefix-xxxxxx`, a valid DNS-1123 label (at most 63 characters).
pub fn unique_name(prefix: &str) -> String {
    let mut clean: String = prefix
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() { c } else { '-' }
        })
        .collect();
    clean.truncate(50);
    let clean = clean.trim_matches('-');
    let clean = if clean.is_empty() { "test" } else { clean };
    format!("{clean}-{}", random_suffix(6))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_are_dns_labels() {
        let a = unique_name("My_Test.Case");
        let b = unique_name("My_Test.Case");
        assert_ne!(a, b);
        assert!(a.starts_with("my-test-case-"), "{a}");
        assert!(a.len() <= 63);
        assert!(a.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
        let long = unique_name(&"x".repeat(100));
        assert!(long.len() <= 63, "{long}");
        assert!(unique_name("--").starts_with("test-"));
    }

    #[test]
    fn random_suffix_has_requested_length() {
        assert_eq!(random_suffix(0).len(), 0);
        assert_eq!(random_suffix(6).len(), 6);
        assert_eq!(random_suffix(40).len(), 40);
    }
}

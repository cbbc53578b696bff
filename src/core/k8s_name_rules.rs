//! Kubernetes naming rules (the subset the operator needs to check before writing objects).

/// [`is_dns_subdomain`] as a schema pattern (with `maxLength: 253`), so that the API server
/// refuses a bad name at apply time.
pub const DNS_SUBDOMAIN_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// A DNS-1123 subdomain: lowercase alphanumerics, `-` and `.`, at most 253 characters, starting
/// and ending with an alphanumeric (Secret, ConfigMap and workload names).
#[must_use]
pub fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253
        && !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// A DNS-1123 label (namespace names): like a subdomain without dots, at most 63 characters.
#[must_use]
pub fn is_dns_label(name: &str) -> bool {
    name.len() <= 63 && !name.contains('.') && is_dns_subdomain(name)
}

/// A label value: empty, or at most 63 alphanumerics, `-`, `_`, `.`, alphanumeric at both ends.
#[must_use]
pub fn is_label_value(value: &str) -> bool {
    value.is_empty() || is_name_part(value)
}

/// A qualified name (label and annotation keys): `[prefix/]name`, the prefix a DNS subdomain.
#[must_use]
pub fn is_qualified_name(key: &str) -> bool {
    match key.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_name_part(name),
        None => is_name_part(key),
    }
}

fn is_name_part(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_subdomains_labels_and_keys() {
        assert!(is_dns_subdomain("acme-token"));
        assert!(is_dns_subdomain("acme.token.v2"));
        assert!(!is_dns_subdomain("Acme"));
        assert!(!is_dns_subdomain("-acme"));
        assert!(!is_dns_subdomain("acme_token"));
        assert!(!is_dns_subdomain(&"a".repeat(254)));
        assert!(is_dns_label("acme"));
        assert!(!is_dns_label("acme.io"));
        assert!(is_qualified_name("app.kubernetes.io/name"));
        assert!(is_qualified_name("team"));
        assert!(!is_qualified_name("bad key"));
        assert!(!is_qualified_name("UPPER.example/x"));
        assert!(is_label_value(""));
        assert!(is_label_value("v1.2_3"));
        assert!(!is_label_value("-x"));
    }
}

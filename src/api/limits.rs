//! Size limits on everything a tenant team writes into a TenantAccess.
//!
//! One team must not be able to starve or crash the operator (or make it sign a token no HTTP
//! server accepts) by writing a large object: every list, map and string has a bound. The CRD
//! schema carries these bounds so the API server refuses an oversized object at apply time, and
//! `crate::core::validate` checks them again (objects stored before an upgrade, servers that do not
//! enforce a schema), so the cost of any one object is bounded either way.

/// Scopes per TenantAccess.
pub const MAX_SCOPES: usize = 64;
/// Bytes of a scope's `resource` (a pipe or data-source name).
pub const MAX_RESOURCE_BYTES: usize = 128;
/// Whether `name` is a resource name as Tinybird allows them: ASCII letters, digits and `_`,
/// non-empty. Nothing else may reach a Tinybird URL: a `.` would turn the free existence check
/// (`GET /v0/pipes/{name}` with the admin token) into a billed pipe query (`top_pages.json`) run
/// with admin rights, and a `/` would leave the pipe's path.
#[must_use]
pub fn is_tinybird_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Fixed params per scope.
pub const MAX_FIXED_PARAMS: usize = 32;
/// Bytes of a param name (fixed params, health-check params).
pub const MAX_PARAM_NAME_BYTES: usize = 64;
/// Bytes of a fixed param's string value.
pub const MAX_FIXED_PARAM_VALUE_BYTES: usize = 1024;
/// Bytes of a DATASOURCES:READ filter as written.
pub const MAX_FILTER_BYTES: usize = 4096;
/// Extra labels, and extra annotations, on the token Secret.
pub const MAX_SECRET_METADATA_ENTRIES: usize = 32;
/// Bytes of one extra annotation value on the token Secret.
pub const MAX_ANNOTATION_VALUE_BYTES: usize = 4096;
/// Workloads restarted per new token.
pub const MAX_ROLLOUT_TARGETS: usize = 16;
/// Entries of `healthCheck.params`, and of `healthCheck.sampleParams`.
pub const MAX_HEALTH_PARAMS: usize = 16;
/// Bytes of one `healthCheck.params` or `sampleParams` value.
pub const MAX_HEALTH_PARAM_VALUE_BYTES: usize = 256;
/// Bytes of a signed token. Tokens travel in an `Authorization` header, and common proxies and
/// servers refuse headers beyond 8 to 64 KiB; a token this large also costs every request.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Entries of a workspace policy's lists and maps (`allowedResources`, `allowedScopeTypes`,
/// `requiredParams`).
pub const MAX_POLICY_ENTRIES: usize = 256;
/// Most pipes a workspace's status lists (`status.pipes`).
pub const MAX_LISTED_PIPES: usize = 64;

#[cfg(test)]
mod tests {
    use super::is_tinybird_name;

    #[test]
    fn a_tinybird_name_is_letters_digits_and_underscores_only() {
        for name in ["top_pages", "t_0123abcd", "Events2", "_x"] {
            assert!(is_tinybird_name(name), "{name:?}");
        }
        for name in ["", "top_pages.json", "top-pages", "a/b", "a b", "a?q=1", "pipé", "a%2E"] {
            assert!(!is_tinybird_name(name), "{name:?}");
        }
    }
}

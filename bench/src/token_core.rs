//! The token core on one core: claims built and HS256-signed per second, through the same
//! library calls the reconciler makes (`validate_tenant_access`, `signing_workspace::resolve`,
//! `desired::issue_token`), on the calling thread only.

use std::hint::black_box;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde::Serialize;
use tenant_access::api::{TenantAccessSpec, WorkspaceSpec};
use tenant_access::core::admin_token::AdminToken;
use tenant_access::core::desired::issue_token;
use tenant_access::core::signing_workspace::resolve;
use tenant_access::core::validate::validate_tenant_access;
use tenant_access_emulators::AdminTokenParts;

use crate::error::{BenchError, Result};

/// Signatures per second on one thread.
#[derive(Debug, Clone, Serialize)]
pub struct TokenCoreResult {
    /// Tokens issued (claims built, signed, hashed).
    pub signatures: u64,
    /// Wall time of the loop, seconds.
    pub seconds: f64,
    /// `signatures / seconds`.
    pub per_second: f64,
    /// Length of one JWT, bytes.
    pub jwt_bytes: usize,
}

/// Runs the loop for `duration` or `max_signatures`, whichever comes first.
///
/// # Errors
/// The fixture is refused by the library (a harness bug).
pub fn run(duration: Duration, max_signatures: u64) -> Result<TokenCoreResult> {
    let admin_token = AdminTokenParts {
        workspace_id: "6f1c2a8e-4b7d-4c1e-9a3f-2d5e8b7c6a10".into(),
        token_id: "0b7e3c1d-9f2a-4e8b-a6c5-3d1f7e9b2c40".into(),
        host: "eu_shared".into(),
    }
    .mint();
    let workspace_spec: WorkspaceSpec = serde_json::from_value(serde_json::json!({
        "adminTokenSecretRef": {"name": "tinybird-admin", "key": "token"},
        "apiUrl": "http://127.0.0.1:7181",
    }))?;
    let signer = resolve(&workspace_spec, AdminToken::new(&admin_token))
        .map_err(|e| BenchError::Fixture(format!("resolving the workspace: {e}")))?;
    // The shape of a typical tenant: two pipes pinned to the tenant's org, a rate limit.
    let spec: TenantAccessSpec = serde_json::from_value(serde_json::json!({
        "workspaceRef": {"name": "analytics"},
        "scopes": [
            {"resource": "top_pages", "fixedParams": {"org": "acme"}},
            {"resource": "tenant_events", "fixedParams": {"org": "acme", "plan": "pro"}},
        ],
        "limits": {"rps": 10},
        "lifetime": "1h",
        "secret": {"name": "acme-tinybird-token"},
    }))?;
    let validated = validate_tenant_access("acme", "acme", &spec)
        .map_err(|e| BenchError::Fixture(format!("validating the tenant: {e}")))?;

    let now = Timestamp::now();
    let first =
        issue_token(&validated, &signer, now).map_err(|e| BenchError::Fixture(format!("signing: {e}")))?;
    let started = Instant::now();
    let mut signatures = 0u64;
    // Time is checked every 256 signatures so the clock does not weigh on the loop.
    while signatures < max_signatures {
        for _ in 0..256 {
            let token = issue_token(black_box(&validated), black_box(&signer), black_box(now))
                .map_err(|e| BenchError::Fixture(format!("signing: {e}")))?;
            black_box(token);
        }
        signatures += 256;
        if started.elapsed() >= duration {
            break;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let per_second = signatures as f64 / seconds.max(f64::EPSILON);
    Ok(TokenCoreResult { signatures, seconds, per_second, jwt_bytes: first.jwt.len() })
}

//! The workspace admin token: `p.<b64url json {"u","id","host"}>.<b64url random signature>`.
//! Its raw UTF-8 bytes are the HS256 key of every JWT of the workspace.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use crate::EmulatorError;
use crate::random;

/// Bytes in the random last segment.
const SIGNATURE_BYTES: usize = 32;

/// What the middle segment of an admin token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminTokenParts {
    /// `u`: the workspace id.
    pub workspace_id: String,
    /// `id`: the token's own id.
    pub token_id: String,
    /// `host`: the region key, e.g. `eu_shared`.
    pub host: String,
}

#[derive(Deserialize)]
struct PayloadFields {
    u: String,
    id: String,
    #[serde(default)]
    host: String,
}

impl AdminTokenParts {
    /// Reads the parts from a token without checking anything else, as clients do.
    ///
    /// # Errors
    /// [`EmulatorError::MalformedAdminToken`] when the token is not `p.<b64url json>.<sig>`.
    pub fn parse(token: &str) -> Result<Self, EmulatorError> {
        let mut segments = token.split('.');
        let (Some("p"), Some(payload), Some(signature), None) =
            (segments.next(), segments.next(), segments.next(), segments.next())
        else {
            return Err(EmulatorError::MalformedAdminToken(
                "expected three dot-separated segments starting with `p`",
            ));
        };
        if signature.is_empty() {
            return Err(EmulatorError::MalformedAdminToken("empty signature segment"));
        }
        let json = URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .map_err(|_| EmulatorError::MalformedAdminToken("middle segment is not base64url"))?;
        let fields: PayloadFields = serde_json::from_slice(&json).map_err(|_| {
            EmulatorError::MalformedAdminToken("middle segment lacks the `u` and `id` fields")
        })?;
        Ok(Self { workspace_id: fields.u, token_id: fields.id, host: fields.host })
    }

    /// A new token with these parts and a random signature segment.
    #[must_use]
    pub fn mint(&self) -> String {
        format!("p.{}.{}", self.encoded_payload(), random_signature())
    }

    /// The middle segment, spaced like Python's `json.dumps` as in real tokens.
    fn encoded_payload(&self) -> String {
        let quoted = |text: &str| serde_json::Value::from(text).to_string();
        let json = format!(
            "{{\"u\": {}, \"id\": {}, \"host\": {}}}",
            quoted(&self.workspace_id),
            quoted(&self.token_id),
            quoted(&self.host)
        );
        URL_SAFE_NO_PAD.encode(json)
    }
}

/// The same token with a fresh random signature segment (what a refresh does).
pub(crate) fn with_new_signature(token: &str) -> String {
    let prefix = token.rsplit_once('.').map_or(token, |(prefix, _)| prefix);
    format!("{prefix}.{}", random_signature())
}

fn random_signature() -> String {
    URL_SAFE_NO_PAD.encode(random::random_bytes(SIGNATURE_BYTES))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> AdminTokenParts {
        AdminTokenParts {
            workspace_id: "3f6c1b1e-0000-0000-0000-000000000000".into(),
            token_id: "token-1".into(),
            host: "eu_shared".into(),
        }
    }

    #[test]
    fn minted_token_round_trips() {
        let token = parts().mint();
        assert!(token.starts_with("p.eyJ1Ijog"));
        assert_eq!(AdminTokenParts::parse(&token).unwrap(), parts());
    }

    #[test]
    fn refresh_keeps_payload_and_changes_signature() {
        let token = parts().mint();
        let refreshed = with_new_signature(&token);
        assert_ne!(token, refreshed);
        assert_eq!(token.rsplit_once('.').unwrap().0, refreshed.rsplit_once('.').unwrap().0);
    }

    #[test]
    fn rejects_malformed_tokens() {
        for token in ["", "p.abc", "e.eyJ1IjoiYSJ9.sig", "p.!!!.sig", "p.e30.sig"] {
            assert!(AdminTokenParts::parse(token).is_err(), "{token}");
        }
    }
}

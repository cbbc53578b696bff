use std::fmt::Write as _;
use std::process::ExitCode;

use jiff::Timestamp;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use super::cluster::{Connection, api_error};
use super::{CliError, block_on, exit, parse_now, read_admin_token, read_input};
use crate::core::admin_token::AdminToken;
use crate::core::jwt::{ParsedToken, TokenError};

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_value_name = "SOURCE")]
pub(super) struct InspectArgs {
    /// The JWT, or `-` to read it from stdin (keeps it out of shell history).
    token: Option<String>,
    /// Read the token from a Secret in the cluster instead.
    #[command(subcommand)]
    source: Option<Source>,
    /// Verify the signature with this workspace admin token, as Tinybird would.
    #[arg(long, env = "TENANT_ACCESS_ADMIN_TOKEN_FILE", global = true)]
    admin_token_file: Option<String>,
    /// Judge expiry as of this time (RFC 3339) instead of now.
    #[arg(long, global = true)]
    now: Option<String>,
    /// Also read each granted pipe's description with the admin token (`GET /v0/pipes/{pipe}`,
    /// one free request per pipe, no query billed) and say whether its SQL filters by each of
    /// the token's fixed params, as the operator judges it. Needs --admin-token-file.
    #[arg(long, global = true, requires = "admin_token_file")]
    pipes: bool,
    /// The Tinybird API for --pipes (default: the admin token's region).
    #[arg(long, global = true)]
    api_url: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
enum Source {
    /// The token in a Secret (a TenantAccess's `spec.secret`), read with your kubeconfig.
    Secret {
        /// Name of the Secret.
        name: String,
        /// The key holding the token.
        #[arg(long, default_value = crate::core::well_known::secret_keys::TOKEN)]
        key: String,
        #[command(flatten)]
        connection: Connection,
    },
}

pub(super) fn run(args: &InspectArgs) -> Result<ExitCode, CliError> {
    let text = match (&args.source, args.token.as_deref()) {
        (Some(Source::Secret { name, key, connection }), _) => read_secret(connection, name, key)?,
        (None, Some("-")) => read_input("-")?,
        (None, Some(token)) => token.to_owned(),
        (None, None) => {
            return Err(CliError::Input(
                "give the token (or `-` to read it from stdin), or `secret NAME` to read it from a Secret"
                    .into(),
            ));
        }
    };
    if let Some(explanation) = admin_token_explanation(&text) {
        return Err(CliError::Input(explanation));
    }
    let token = ParsedToken::parse(&text).map_err(|e| CliError::Input(format!("the token is {e}")))?;
    let now = parse_now(args.now.as_deref())?;
    print!("{}", explain(&token, now));

    let (verdict, code) = match &args.admin_token_file {
        None => match token.check_validity_window(now) {
            Ok(()) => (
                "not expired; signature NOT verified (pass --admin-token-file to verify)".to_owned(),
                ExitCode::SUCCESS,
            ),
            Err(error) => verdict_for(&error),
        },
        Some(path) => {
            let key = read_admin_token(path)?;
            match token.verify(&key, now) {
                Ok(_) => (
                    "valid: signature verified with the admin token (HS256), not expired".to_owned(),
                    ExitCode::SUCCESS,
                ),
                Err(error) => verdict_for(&error),
            }
        }
    };
    println!("Verdict:    {verdict}");
    if args.pipes
        && let Some(path) = &args.admin_token_file
    {
        let key = read_admin_token(path)?;
        let api_url = match &args.api_url {
            Some(url) => url.clone(),
            None => {
                let region = key.decode().ok().and_then(|facts| facts.region);
                crate::core::admin_token::api_url_for_region(region.as_deref())
                    .map_err(|e| CliError::Input(format!("{e}; name the API with --api-url")))?
            }
        };
        let judged = block_on(judge_pipes(&token, &key, &api_url))?;
        print!("{}", isolation_lines(&judged));
        let leaks = judged
            .iter()
            .any(|(_, verdicts)| verdicts.as_ref().is_ok_and(|v| v.iter().any(|i| i.verdict == "Unused")));
        if leaks && code == ExitCode::SUCCESS {
            return Ok(ExitCode::from(exit::NOT_ISOLATED));
        }
    }
    Ok(code)
}

/// Each granted pipe with fixed params, and its verdict on each (or why it has none).
type PipeVerdicts = Vec<(String, Result<Vec<crate::api::ParamIsolation>, String>)>;

/// Describes each pipe the token grants with fixed params, and judges them
/// ([`crate::core::isolation_report::judge_pipe`]).
async fn judge_pipes(token: &ParsedToken, key: &AdminToken, api_url: &str) -> Result<PipeVerdicts, CliError> {
    use crate::adapters::health::HttpProber;
    let client = crate::adapters::http::client(std::time::Duration::from_secs(10))
        .map_err(|e| CliError::Input(format!("no HTTP client: {e}")))?;
    let prober = HttpProber::with_client(client);
    let mut judged = Vec::new();
    for scope in token.payload.get("scopes").and_then(|v| v.as_array()).into_iter().flatten() {
        let field = |name: &str| scope.get(name).and_then(|v| v.as_str());
        let (Some(crate::api::SCOPE_PIPES_READ), Some(resource)) = (field("type"), field("resource")) else {
            continue;
        };
        let params: Vec<&str> = scope
            .get("fixed_params")
            .and_then(|v| v.as_object())
            .map(|p| p.keys().map(String::as_str).collect())
            .unwrap_or_default();
        if params.is_empty() {
            continue;
        }
        let verdicts = prober
            .judge_pipe(api_url, resource, (key, std::time::Duration::from_secs(10)), &params)
            .await
            .map_err(|why| format!("not described: {why}"));
        judged.push((resource.to_owned(), verdicts));
    }
    Ok(judged)
}

/// The `Isolation:` lines of `inspect --pipes`.
fn isolation_lines(judged: &PipeVerdicts) -> String {
    let mut out = String::from("Isolation:\n");
    if judged.is_empty() {
        out.push_str("  no pipe with fixed params: nothing to judge\n");
    }
    for (pipe, verdicts) in judged {
        match verdicts {
            Ok(verdicts) => {
                for verdict in verdicts {
                    let _ = write!(out, "  - {pipe}  {}: {}", verdict.param, verdict.verdict);
                    if let Some(message) = &verdict.message {
                        let _ = write!(out, " ({message})");
                    }
                    out.push('\n');
                }
            }
            Err(why) => {
                let _ = writeln!(out, "  - {pipe}  {why}");
            }
        }
    }
    out
}

/// When `text` is a workspace admin token rather than a JWT: what it is, without repeating it.
fn admin_token_explanation(text: &str) -> Option<String> {
    let token = AdminToken::new(text);
    let facts = token.decode().ok()?;
    Some(format!(
        "this is a Tinybird workspace admin token (workspace {}, fingerprint {}), not a JWT: it is the key that signs the workspace's JWTs and must never reach an app or a shell history; inspect a token from a TenantAccess's Secret instead (`tenant-access inspect secret NAME -n NS`), and if this admin token was exposed, refresh it in Tinybird and update the workspace's admin-token Secret",
        facts.workspace_id,
        token.fingerprint()
    ))
}

/// The token in `key` of Secret `name`.
fn read_secret(connection: &Connection, name: &str, key: &str) -> Result<String, CliError> {
    block_on(async {
        let (client, namespace) = connection.connect().await?;
        let api: Api<Secret> = Api::namespaced(client, &namespace);
        let secret = api.get(name).await.map_err(|e| api_error("reading", "Secret", &namespace, name, &e))?;
        let value = secret.data.as_ref().and_then(|data| data.get(key)).ok_or_else(|| {
            let keys: Vec<&str> = secret.data.iter().flat_map(|d| d.keys().map(String::as_str)).collect();
            CliError::Input(format!(
                "Secret {namespace}/{name} has no key {key:?} (its keys: {}); name the key with --key",
                if keys.is_empty() { "none".to_owned() } else { keys.join(", ") }
            ))
        })?;
        String::from_utf8(value.0.clone())
            .map_err(|_| CliError::Input(format!("Secret {namespace}/{name} key {key:?} is not text")))
    })
}

fn verdict_for(error: &TokenError) -> (String, ExitCode) {
    let code = match error {
        TokenError::Expired { .. } => exit::EXPIRED,
        TokenError::BadSignature => exit::BAD_SIGNATURE,
        TokenError::NotYetValid { .. } => exit::NOT_YET_VALID,
        TokenError::Malformed(_) | TokenError::MissingClaim(_) => exit::FAILURE,
    };
    let label = match error {
        TokenError::Expired { .. } => "EXPIRED",
        TokenError::BadSignature => "BAD SIGNATURE",
        TokenError::NotYetValid { .. } => "NOT YET VALID",
        TokenError::Malformed(_) | TokenError::MissingClaim(_) => "INVALID",
    };
    (format!("{label}: {error}"), ExitCode::from(code))
}

/// The human-readable explanation of a token (never the token itself).
fn explain(token: &ParsedToken, now: Timestamp) -> String {
    let mut out = String::new();
    let header = &token.header;
    let alg = header.get("alg").and_then(|v| v.as_str()).unwrap_or("?");
    let _ = write!(out, "Header:     alg {alg}");
    if alg != "HS256" {
        out.push_str(" (Tinybird ignores it and verifies HS256)");
    }
    out.push('\n');
    let payload = &token.payload;
    let text = |name: &str| payload.get(name).and_then(|v| v.as_str()).unwrap_or("<missing>").to_owned();
    let _ = writeln!(out, "Workspace:  {}", text("workspace_id"));
    let _ = writeln!(out, "Name:       {} (rate-limit bucket)", text("name"));
    if let Some(owner) = payload.get(crate::core::desired::CLERK_OWNER_CLAIM).and_then(|v| v.as_str()) {
        // A session token Clerk minted from a template the operator manages.
        let user = payload.get("sub").and_then(|v| v.as_str()).unwrap_or("<no sub>");
        let _ = writeln!(
            out,
            "Minted by:  Clerk, from the template of TenantAccess {owner}, for {user} (the name carries the user or organization when the template's rateLimitKey does)"
        );
    }
    let _ = writeln!(out, "Issued:     {}", describe_time(token.issued_at(), now));
    let _ = writeln!(out, "Expires:    {}", describe_time(token.expires_at(), now));
    if let Some(nbf) = token.not_before() {
        let _ = writeln!(out, "Not before: {}", describe_time(Some(nbf), now));
    }
    out.push_str("Scopes:\n");
    match payload.get("scopes").and_then(|v| v.as_array()) {
        None => out.push_str("  <missing: Tinybird refuses a token without scopes>\n"),
        Some(scopes) => {
            for scope in scopes {
                let field = |name: &str| scope.get(name).and_then(|v| v.as_str()).unwrap_or("?").to_owned();
                let _ = write!(out, "  - {} {}", field("type"), field("resource"));
                if let Some(params) = scope.get("fixed_params").and_then(|v| v.as_object()) {
                    let rendered: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    let _ = write!(out, "  fixed_params: {}", rendered.join(", "));
                    if params.values().any(|v| v.is_null() || v.as_str().is_some_and(str::is_empty)) {
                        out.push_str(
                            "  (a null or empty param: a pipe guarding with defined() drops its filter)",
                        );
                    }
                }
                if let Some(filter) = scope.get("filter").and_then(|v| v.as_str()) {
                    let _ = write!(out, "  filter: {filter}");
                }
                out.push('\n');
            }
        }
    }
    match payload.pointer("/limits/rps").and_then(serde_json::Value::as_i64) {
        Some(rps) if rps > 0 => {
            let _ = writeln!(out, "Limits:     {rps} requests/s per pipe");
        }
        _ => out.push_str("Limits:     none\n"),
    }
    out
}

fn describe_time(time: Option<Timestamp>, now: Timestamp) -> String {
    let Some(time) = time else { return "<missing>".to_owned() };
    let seconds = time.as_second() - now.as_second();
    let relative = crate::core::duration::format(jiff::SignedDuration::from_secs(seconds.abs()));
    if seconds >= 0 { format!("{time} (in {relative})") } else { format!("{time} ({relative} ago)") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explains_a_token_clerk_minted_from_a_managed_template() {
        let key = AdminToken::new("p.test-key");
        let minted = serde_json::json!({"workspace_id": "ws", "name": "acme_dash_user_alice", "sub": "user_alice",
            "exp": 1_767_225_660, "iat": 1_767_225_600, "tenant_access": "acme/dash",
            "scopes": [{"type": "PIPES:READ", "resource": "top_pages", "fixed_params": {"org": "_none_"}}]});
        let token = ParsedToken::parse(&crate::core::jwt::sign_value(&minted, &key).unwrap()).unwrap();
        let text = explain(&token, Timestamp::from_second(1_767_225_600).unwrap());
        assert!(
            text.contains("Minted by:  Clerk, from the template of TenantAccess acme/dash, for user_alice"),
            "{text}"
        );
        assert!(!text.contains("defined()"), "{text}");

        let leaky = serde_json::json!({"workspace_id": "ws", "name": "n", "exp": 1,
            "scopes": [{"type": "PIPES:READ", "resource": "top_pages", "fixed_params": {"org": null}}]});
        let token = ParsedToken::parse(&crate::core::jwt::sign_value(&leaky, &key).unwrap()).unwrap();
        let text = explain(&token, Timestamp::from_second(0).unwrap());
        assert!(text.contains("a null or empty param"), "{text}");
        assert!(!text.contains("Minted by"), "{text}");
    }
}

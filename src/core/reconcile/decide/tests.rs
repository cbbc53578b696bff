use jiff::SignedDuration;
use k8s_openapi::ByteString;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};

use super::*;
use crate::api::{SecretKeySelector, TenantAccessSpec, WorkspaceSpec};
use crate::core::admin_token::AdminToken;
use crate::core::admin_token::tests::fake_admin_token;
use crate::core::desired::{IssuedToken, desired_secret, issue_token};
use crate::core::signing_workspace::resolve;
use crate::core::validate::validate_tenant_access;

pub(crate) const UID: &str = "uid-acme";
pub(crate) const SPEC: &str = "workspaceRef: {name: a}\nscopes: [{resource: top_pages, fixedParams: {org: acme}}]\nlifetime: 1h\nsecret: {}\n";

pub(crate) fn workspace(key: &str) -> SigningWorkspace {
    let spec = WorkspaceSpec {
        admin_token_secret_ref: SecretKeySelector { name: "admin".into(), key: None },
        ..WorkspaceSpec::default()
    };
    resolve(&spec, AdminToken::new(&fake_admin_token("ws-1", None).replace("c2lnbmF0dXJlLXRlc3Q", key)))
        .unwrap()
}

pub(crate) fn access(yaml: &str) -> ValidatedAccess {
    let spec: TenantAccessSpec = serde_saphyr::from_str(yaml).unwrap();
    validate_tenant_access("acme", "acme", &spec).unwrap()
}

fn t0() -> Timestamp {
    "2026-01-01T00:00:00Z".parse().unwrap()
}

pub(crate) fn owner() -> OwnerReference {
    OwnerReference {
        uid: UID.into(),
        controller: Some(true),
        name: "acme".into(),
        ..OwnerReference::default()
    }
}

/// A Secret as the operator wrote it at `t0` with `ws`'s key, and its status.
pub(crate) fn issued(access: &ValidatedAccess, ws: &SigningWorkspace) -> (Secret, TokenStatus, IssuedToken) {
    let token = issue_token(access, ws, t0()).unwrap();
    let secret = desired_secret(access, ws, &token, 1, Some(owner())).unwrap();
    let status = TokenStatus {
        name: access.token_name.clone(),
        issued_at: Time(token.issued_at),
        expires_at: Time(token.expires_at),
        renewal_time: Time(token.renewal_time),
        revision: 1,
        claims_hash: token.claims_hash.clone(),
        signing_key_fingerprint: ws.signing_key_fingerprint.clone(),
        secret_name: "acme".into(),
        renew_request: None,
        secret_observed: None,
    };
    (secret, status, token)
}

fn decide(
    access: &ValidatedAccess,
    ws: &SigningWorkspace,
    secret: Option<&Secret>,
    status: Option<&TokenStatus>,
    annotations: Option<&BTreeMap<String, String>>,
    now: Timestamp,
) -> TokenDecision {
    let token = secret.map_or(ObservedToken::Absent, ObservedToken::Read);
    let desired_claims_hash = crate::core::desired::access_claims(access, &ws.workspace_id).hash();
    let observed = Observed {
        owner_uid: UID,
        token,
        desired_claims_hash: &desired_claims_hash,
        status_token: status,
        annotations,
    };
    decide_token(access, ws, observed, now)
}

#[test]
fn issues_when_the_secret_is_missing() {
    let access = access(SPEC);
    assert_eq!(
        decide(&access, &workspace("k1"), None, None, None, t0()),
        TokenDecision::Issue(IssueReason::SecretMissing)
    );
}

#[test]
fn keeps_a_valid_token_until_the_renewal_time_and_renews_at_it() {
    let access = access(SPEC);
    let ws = workspace("k1");
    let (secret, status, token) = issued(&access, &ws);
    let just_before = token.renewal_time.checked_sub(SignedDuration::from_secs(1)).unwrap();
    match decide(&access, &ws, Some(&secret), Some(&status), None, just_before) {
        TokenDecision::Keep(current) => {
            let nominal: Timestamp = "2026-01-01T00:40:00Z".parse().unwrap();
            assert_eq!(current.renewal_time, nominal - renewal_offset(&access));
            assert_eq!(current.jwt, token.jwt);
        }
        other => panic!("expected Keep, got {other:?}"),
    }
    assert_eq!(
        decide(&access, &ws, Some(&secret), Some(&status), None, token.renewal_time),
        TokenDecision::Issue(IssueReason::RenewalDue)
    );
}

#[test]
fn resigns_when_the_key_rotates() {
    let access = access(SPEC);
    let (secret, status, _) = issued(&access, &workspace("k1"));
    assert_eq!(
        decide(&access, &workspace("k2"), Some(&secret), Some(&status), None, t0()),
        TokenDecision::Issue(IssueReason::SigningKeyChanged)
    );
}

/// Decides on a Secret known from its digest (built again for the status's token).
fn decide_on_digest(
    access: &ValidatedAccess,
    ws: &SigningWorkspace,
    secret: &Secret,
    token: TokenMatch,
    status: &TokenStatus,
    now: Timestamp,
) -> TokenDecision {
    let desired_claims_hash = crate::core::desired::access_claims(access, &ws.workspace_id).hash();
    let observed = Observed {
        owner_uid: UID,
        token: ObservedToken::Digest { secret, token },
        desired_claims_hash: &desired_claims_hash,
        status_token: Some(status),
        annotations: None,
    };
    decide_token(access, ws, observed, now)
}

#[test]
fn a_digest_that_matches_decides_as_the_secret_read_would() {
    let (access, ws) = (access(SPEC), workspace("k1"));
    let (secret, status, token) = issued(&access, &ws);
    assert!(matches!(
        decide_on_digest(&access, &ws, &secret, TokenMatch::Same, &status, t0()),
        TokenDecision::Keep(current) if current.jwt == token.jwt
    ));
    assert_eq!(
        decide_on_digest(&access, &ws, &secret, TokenMatch::Same, &status, token.renewal_time),
        TokenDecision::Issue(IssueReason::RenewalDue)
    );
}

#[test]
fn a_digest_showing_another_signature_resigns_for_the_rotation_or_the_edit() {
    let access = access(SPEC);
    let (secret, status, _) = issued(&access, &workspace("k1"));
    // The Secret as built with the new key; its digest says the stored token has another signature.
    let rotated = workspace("k2");
    let (rebuilt, _, _) = issued(&access, &rotated);
    assert_eq!(
        decide_on_digest(&access, &rotated, &rebuilt, TokenMatch::OtherSignature, &status, t0()),
        TokenDecision::Issue(IssueReason::SigningKeyChanged)
    );
    let ws = workspace("k1");
    assert_eq!(
        decide_on_digest(&access, &ws, &secret, TokenMatch::OtherSignature, &status, t0()),
        TokenDecision::Issue(IssueReason::TokenInvalid),
        "same key, other signature: the token was edited"
    );
}

#[test]
fn resigns_an_edited_token() {
    let access = access(SPEC);
    let ws = workspace("k1");
    let (mut secret, status, _) = issued(&access, &ws);
    let forged = issue_token(&access, &workspace("attacker"), t0()).unwrap();
    secret.data.as_mut().unwrap().insert("token".into(), ByteString(forged.jwt.into_bytes()));
    assert_eq!(
        decide(&access, &ws, Some(&secret), Some(&status), None, t0()),
        TokenDecision::Issue(IssueReason::TokenInvalid)
    );
    secret.data.as_mut().unwrap().insert("token".into(), ByteString(b"garbage".to_vec()));
    assert_eq!(
        decide(&access, &ws, Some(&secret), Some(&status), None, t0()),
        TokenDecision::Issue(IssueReason::TokenUnparseable)
    );
    secret.data.as_mut().unwrap().remove("token");
    assert_eq!(
        decide(&access, &ws, Some(&secret), Some(&status), None, t0()),
        TokenDecision::Issue(IssueReason::TokenMissing)
    );
}

#[test]
fn resigns_when_claims_or_lifetime_change() {
    let ws = workspace("k1");
    let (secret, status, _) = issued(&access(SPEC), &ws);
    let other_params = access(&SPEC.replace("org: acme", "org: acme2"));
    assert_eq!(
        decide(&other_params, &ws, Some(&secret), Some(&status), None, t0()),
        TokenDecision::Issue(IssueReason::ClaimsChanged)
    );
    let longer = access(&SPEC.replace("lifetime: 1h", "lifetime: 2h"));
    assert_eq!(
        decide(&longer, &ws, Some(&secret), Some(&status), None, t0()),
        TokenDecision::Issue(IssueReason::LifetimeChanged)
    );
}

#[test]
fn resigns_once_per_new_renew_annotation_value() {
    let access = access(SPEC);
    let ws = workspace("k1");
    let (secret, mut status, _) = issued(&access, &ws);
    let annotations = BTreeMap::from([(ANNOTATION_RENEW.to_owned(), "2026-01-01".to_owned())]);
    assert_eq!(
        decide(&access, &ws, Some(&secret), Some(&status), Some(&annotations), t0()),
        TokenDecision::Issue(IssueReason::RenewRequested)
    );
    status.renew_request = Some("2026-01-01".into());
    assert!(matches!(
        decide(&access, &ws, Some(&secret), Some(&status), Some(&annotations), t0()),
        TokenDecision::Keep(_)
    ));
}

#[test]
fn keeps_a_long_renew_annotation_in_status_as_a_short_hash_and_honours_it_once() {
    let access = access(SPEC);
    let ws = workspace("k1");
    let (secret, mut status, _) = issued(&access, &ws);
    let long = "x".repeat(256 * 1024);
    let annotations = BTreeMap::from([(ANNOTATION_RENEW.to_owned(), long.clone())]);
    let kept = renew_request(Some(&annotations)).unwrap_or_default();
    assert!(kept.len() <= 64, "status keeps {} bytes of the annotation", kept.len());
    assert_ne!(kept, long);
    assert_eq!(
        decide(&access, &ws, Some(&secret), Some(&status), Some(&annotations), t0()),
        TokenDecision::Issue(IssueReason::RenewRequested)
    );
    status.renew_request = Some(kept);
    assert!(matches!(
        decide(&access, &ws, Some(&secret), Some(&status), Some(&annotations), t0()),
        TokenDecision::Keep(_)
    ));
}

#[test]
fn leaves_a_foreign_secret_alone() {
    let access = access(SPEC);
    let ws = workspace("k1");
    let (mut secret, status, _) = issued(&access, &ws);
    secret.metadata.owner_references = None;
    assert_eq!(decide(&access, &ws, Some(&secret), Some(&status), None, t0()), TokenDecision::Conflict);
}

#[test]
fn keeps_a_valid_token_even_without_status_after_a_restart() {
    let access = access(SPEC);
    let ws = workspace("k1");
    let (secret, _, _) = issued(&access, &ws);
    assert!(matches!(decide(&access, &ws, Some(&secret), None, None, t0()), TokenDecision::Keep(_)));
}

#[test]
fn repairs_missing_labels_and_keys_but_not_extra_ones() {
    let access = access(SPEC);
    let ws = workspace("k1");
    let (desired, _, _) = issued(&access, &ws);
    let mut observed = desired.clone();
    observed.metadata.labels.as_mut().unwrap().insert("added-by-someone".into(), "x".into());
    assert!(!secret_needs_repair(&desired, &observed));
    observed.metadata.labels.as_mut().unwrap().remove("app.kubernetes.io/managed-by");
    assert!(secret_needs_repair(&desired, &observed));
    let mut observed = desired.clone();
    observed.data.as_mut().unwrap().remove("api-url");
    assert!(secret_needs_repair(&desired, &observed));
}

fn clerk_configmap() -> k8s_openapi::api::core::v1::ConfigMap {
    let access = access(
        "workspaceRef: {name: a}\nscopes: [{resource: top_pages, fixedParams: {org: acme}}]\nclerkTemplate: {}\n",
    );
    let output = access.clerk_template.clone().unwrap();
    let template = crate::core::desired::clerk_template(&access, &output, "ws-1");
    crate::core::desired::desired_clerk_configmap(&access, &template, Some(owner()))
}

#[test]
fn writes_only_a_clerk_configmap_this_tenant_access_created() {
    let desired = clerk_configmap();
    fn read(configmap: &ConfigMap) -> Option<ObservedConfigMap<'_>> {
        Some(ObservedConfigMap::Read(configmap))
    }
    assert_eq!(decide_configmap(&desired, None, UID), ConfigMapDecision::Create);
    assert_eq!(decide_configmap(&desired, read(&desired), UID), ConfigMapDecision::Keep);
    let mut stale = desired.clone();
    stale.data.as_mut().unwrap().insert("template.json".into(), "{}".into());
    assert_eq!(decide_configmap(&desired, read(&stale), UID), ConfigMapDecision::Update);

    // Someone else's: no owner, another owner, or a non-controller reference to this one.
    // The managed-by label it may carry does not make it this TenantAccess's.
    let mut foreign = desired.clone();
    foreign.metadata.owner_references = None;
    assert_eq!(decide_configmap(&desired, read(&foreign), UID), ConfigMapDecision::Conflict);
    foreign.metadata.owner_references = Some(vec![OwnerReference { uid: "uid-other".into(), ..owner() }]);
    assert_eq!(decide_configmap(&desired, read(&foreign), UID), ConfigMapDecision::Conflict);
    foreign.metadata.owner_references = Some(vec![OwnerReference { controller: None, ..owner() }]);
    assert_eq!(decide_configmap(&desired, read(&foreign), UID), ConfigMapDecision::Conflict);
    let foreign_metadata = ObservedConfigMap::Metadata { metadata: &foreign.metadata, data_hash: None };
    assert_eq!(decide_configmap(&desired, Some(foreign_metadata), UID), ConfigMapDecision::Conflict);
}

#[test]
fn decides_a_clerk_configmap_from_its_metadata_and_the_hash_of_what_was_seen() {
    let desired = clerk_configmap();
    let hash = crate::core::desired::configmap_data_hash(&desired);
    let known = |data_hash| Some(ObservedConfigMap::Metadata { metadata: &desired.metadata, data_hash });
    assert_eq!(decide_configmap(&desired, known(Some(&hash)), UID), ConfigMapDecision::Keep);
    let mut stale = desired.clone();
    stale.data.as_mut().unwrap().insert("template.json".into(), "{}".into());
    let stale_hash = crate::core::desired::configmap_data_hash(&stale);
    assert_ne!(stale_hash, hash);
    assert_eq!(decide_configmap(&desired, known(Some(&stale_hash)), UID), ConfigMapDecision::Update);
    // Not known: written again rather than assumed.
    assert_eq!(decide_configmap(&desired, known(None), UID), ConfigMapDecision::Update);
    // Metadata lacking a label is repaired whatever the data.
    let mut unlabelled = desired.metadata.clone();
    unlabelled.labels = None;
    let observed = ObservedConfigMap::Metadata { metadata: &unlabelled, data_hash: Some(&hash) };
    assert_eq!(decide_configmap(&desired, Some(observed), UID), ConfigMapDecision::Update);
}

/// `acme/<name>` with `lifetime` and `renewBefore`.
fn named(name: &str, lifetime: &str, renew_before: &str) -> ValidatedAccess {
    let yaml =
        format!("{SPEC}lifetime: {lifetime}\nrenewBefore: {renew_before}\n").replace("lifetime: 1h\n", "");
    let spec: TenantAccessSpec = serde_saphyr::from_str(&yaml).unwrap();
    validate_tenant_access("acme", name, &spec).unwrap()
}

/// The renewal times of `count` TenantAccesses whose tokens were all signed at `issued_at`.
fn renewals_of_tokens_signed_together(
    count: usize,
    lifetime: &str,
    renew_before: &str,
    issued_at: Timestamp,
) -> Vec<Timestamp> {
    (0..count)
        .map(|i| {
            let access = named(&format!("tenant-{i}"), lifetime, renew_before);
            renewal_time(issued_at + access.lifetime, &access)
        })
        .collect()
}

fn span(times: &[Timestamp]) -> SignedDuration {
    let (Some(first), Some(last)) = (times.iter().min(), times.iter().max()) else {
        return SignedDuration::ZERO;
    };
    last.duration_since(*first)
}

#[test]
fn a_renewal_is_brought_forward_by_less_than_a_quarter_of_renew_before_never_delayed() {
    for (lifetime, renew_before) in
        [("1h", "20m"), ("1m", "45s"), ("10m", "10s"), ("1h", "59m"), ("90s", "30s")]
    {
        for i in 0..500 {
            let access = named(&format!("tenant-{i}"), lifetime, renew_before);
            let expires_at = t0() + access.lifetime;
            let nominal = expires_at - access.renew_before;
            let window = access.renew_before.min(access.lifetime - access.renew_before) / 4;
            let renewal = renewal_time(expires_at, &access);
            assert!(renewal <= nominal, "{lifetime}/{renew_before}: renewed with less than renewBefore left");
            assert!(
                nominal.duration_since(renewal) < window.max(SignedDuration::from_secs(1)),
                "{lifetime}/{renew_before}"
            );
            assert!(
                renewal.duration_since(t0()) >= (access.lifetime - access.renew_before) * 3 / 4,
                "{lifetime}/{renew_before}: a token lives most of its planned time"
            );
            assert_eq!(renewal.subsec_nanosecond(), 0, "whole seconds, as the token's exp");
        }
    }
}

#[test]
fn two_hundred_tokens_signed_together_come_due_spread_over_minutes_not_seconds() {
    // After an admin-token rotation every dependent token is signed in the same second.
    let renewals = renewals_of_tokens_signed_together(200, "1h", "20m", t0());
    // The window is a quarter of renewBefore: 5 minutes, covered nearly end to end...
    assert!(span(&renewals) >= SignedDuration::from_secs(270), "spread over {}", span(&renewals));
    // ...and evenly: each minute of it holds about a fifth of the renewals (40).
    let nominal = t0() + SignedDuration::from_mins(40);
    let mut per_minute = [0_usize; 5];
    for renewal in &renewals {
        let early = nominal.duration_since(*renewal).as_secs();
        per_minute[usize::try_from(early / 60).unwrap()] += 1;
    }
    assert!(
        per_minute.iter().all(|n| (20..=60).contains(n)),
        "renewals per minute of the window: {per_minute:?}"
    );
    // The most that come due in any one second: a handful, not 200.
    let mut per_second = std::collections::BTreeMap::<Timestamp, usize>::new();
    for renewal in &renewals {
        *per_second.entry(*renewal).or_default() += 1;
    }
    assert!(per_second.values().all(|n| *n <= 4), "{:?}", per_second.values().max());
}

#[test]
fn tokens_signed_together_stay_spread_in_every_later_cycle() {
    // Each token is renewed at its renewal time, which starts its next cycle.
    let mut issued: Vec<Timestamp> = vec![t0(); 200];
    for cycle in 1..=5 {
        issued = issued
            .iter()
            .enumerate()
            .map(|(i, at)| {
                let access = named(&format!("tenant-{i}"), "1h", "20m");
                renewal_time(*at + access.lifetime, &access)
            })
            .collect();
        assert!(
            span(&issued) >= SignedDuration::from_secs(270) * cycle.min(2),
            "cycle {cycle}: {}",
            span(&issued)
        );
    }
}

#[test]
fn the_renewal_offset_is_a_property_of_the_object_not_of_the_moment() {
    let access = named("tenant-1", "1h", "20m");
    assert_eq!(renewal_offset(&access), renewal_offset(&named("tenant-1", "1h", "20m")));
    let spec: TenantAccessSpec = serde_saphyr::from_str(&format!("{SPEC}renewBefore: 20m\n")).unwrap();
    let elsewhere = validate_tenant_access("other", "tenant-1", &spec).unwrap();
    let offsets: std::collections::BTreeSet<_> =
        (0..20).map(|i| renewal_offset(&named(&format!("tenant-{i}"), "1h", "20m"))).collect();
    assert!(offsets.len() > 15, "different objects get different offsets: {offsets:?}");
    assert_ne!(renewal_offset(&access), renewal_offset(&elsewhere), "the namespace counts");
}

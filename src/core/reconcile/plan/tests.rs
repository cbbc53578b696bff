use jiff::SignedDuration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;
use crate::core::reconcile::decide::TokenMatch;
use crate::core::reconcile::decide::tests::{SPEC, UID, access, issued, owner, workspace};

fn t0() -> Timestamp {
    "2026-01-01T00:00:00Z".parse().unwrap()
}

fn never_lacks(_: &Secret) -> bool {
    false
}

fn always_lacks(_: &Secret) -> bool {
    true
}

/// The inputs of a reconcile of `access` at `now` that observed `secret` and `status`.
fn inputs<'a>(
    access: &'a ValidatedAccess,
    signer: &'a SigningWorkspace,
    secret: ObservedToken<'a>,
    status: Option<&'a TokenStatus>,
    now: Timestamp,
) -> Inputs<'a> {
    Inputs {
        access,
        signer,
        owner_uid: UID,
        owner: Some(owner()),
        secret,
        secret_lacks: &never_lacks,
        status_token: status,
        previous_conditions: &[],
        annotations: None,
        revision_floor: None,
        now,
    }
}

fn issued_plan(plan: Plan) -> Issued {
    match plan.token {
        Some(TokenPlan::Issue(issued)) => *issued,
        other => panic!("expected Issue, got {other:?}"),
    }
}

fn kept_plan(plan: Plan) -> Kept {
    match plan.token {
        Some(TokenPlan::Keep(kept)) => *kept,
        other => panic!("expected Keep, got {other:?}"),
    }
}

#[test]
fn a_first_issuance_signs_revision_1_into_the_desired_secret() {
    let (access, ws) = (access(SPEC), workspace("k1"));
    let issued = issued_plan(plan(&inputs(&access, &ws, ObservedToken::Absent, None, t0())).unwrap());
    assert_eq!(
        (issued.reason, issued.event_reason, issued.revision),
        (IssueReason::SecretMissing, reason::ISSUED, 1)
    );
    let (expected, status, token) = crate::core::reconcile::decide::tests::issued(&access, &ws);
    assert_eq!(issued.secret, expected, "the Secret as the build stage writes it");
    assert_eq!(issued.token.jwt, token.jwt);
    assert_eq!(issued.status.revision, status.revision);
    assert_eq!(issued.condition.reason, reason::ISSUED);
    assert!(
        issued.condition.message.starts_with("token revision 1 expires at"),
        "{}",
        issued.condition.message
    );
}

#[test]
fn a_revision_floor_numbers_the_first_token_after_it() {
    let (access, ws) = (access(SPEC), workspace("k1"));
    let mut inputs = inputs(&access, &ws, ObservedToken::Absent, None, t0());
    inputs.revision_floor = Some(6);
    let issued = issued_plan(plan(&inputs).unwrap());
    assert_eq!(issued.revision, 7);
    assert_eq!(issued.secret.metadata.annotations.unwrap()[ANNOTATION_REVISION], "7");
}

#[test]
fn a_renewal_takes_the_next_revision_and_reports_renewed() {
    let (access, ws) = (access(SPEC), workspace("k1"));
    let (secret, status, token) = issued(&access, &ws);
    let due =
        plan(&inputs(&access, &ws, ObservedToken::Read(&secret), Some(&status), token.renewal_time)).unwrap();
    let issued = issued_plan(due);
    assert_eq!(
        (issued.reason, issued.event_reason, issued.revision),
        (IssueReason::RenewalDue, reason::RENEWED, 2)
    );
    assert_eq!(issued.token.issued_at, token.renewal_time, "signed at the plan's time");
}

#[test]
fn the_renew_request_is_recorded_in_the_status_of_the_token_it_caused() {
    let (access, ws) = (access(SPEC), workspace("k1"));
    let (secret, status, _) = issued(&access, &ws);
    let annotations =
        BTreeMap::from([(crate::core::well_known::ANNOTATION_RENEW.to_owned(), "now".to_owned())]);
    let mut inputs = inputs(&access, &ws, ObservedToken::Read(&secret), Some(&status), t0());
    inputs.annotations = Some(&annotations);
    let issued = issued_plan(plan(&inputs).unwrap());
    assert_eq!(issued.reason, IssueReason::RenewRequested);
    assert_eq!(issued.event_reason, reason::RESIGNED);
    assert_eq!(issued.status.renew_request.as_deref(), Some("now"));
}

#[test]
fn someone_elses_secret_is_a_conflict_naming_it() {
    let (access, ws) = (access(SPEC), workspace("k1"));
    let (mut secret, _, _) = issued(&access, &ws);
    secret.metadata.owner_references = None;
    match plan(&inputs(&access, &ws, ObservedToken::Read(&secret), None, t0())).unwrap().token {
        Some(TokenPlan::Conflict { message }) => {
            assert!(message.starts_with("Secret acme/acme exists and is not managed"), "{message}");
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
}

#[test]
fn a_valid_token_is_kept_with_its_revision_and_no_write() {
    let (access, ws) = (access(SPEC), workspace("k1"));
    let (secret, status, token) = issued(&access, &ws);
    let just_before = token.renewal_time.checked_sub(SignedDuration::from_secs(1)).unwrap();
    let kept = kept_plan(
        plan(&inputs(&access, &ws, ObservedToken::Read(&secret), Some(&status), just_before)).unwrap(),
    );
    assert_eq!((kept.revision, kept.token.jwt.as_str()), (1, token.jwt.as_str()));
    assert!(kept.repair.is_none());
    assert_eq!(kept.status, status);
    assert_eq!(kept.condition.reason, reason::ISSUED);
}

#[test]
fn a_kept_token_keeps_the_reason_it_was_written_for() {
    let (access, ws) = (access(SPEC), workspace("k1"));
    let (secret, status, _) = issued(&access, &ws);
    let renewed = Condition {
        type_: condition::TOKEN_ISSUED.into(),
        status: "True".into(),
        reason: reason::RENEWED.into(),
        message: String::new(),
        last_transition_time: Time(t0()),
        observed_generation: None,
    };
    let previous = [renewed];
    let mut inputs = inputs(&access, &ws, ObservedToken::Read(&secret), Some(&status), t0());
    inputs.previous_conditions = &previous;
    assert_eq!(kept_plan(plan(&inputs).unwrap()).condition.reason, reason::RENEWED);
}

#[test]
fn a_kept_token_whose_secret_lacks_something_is_repaired_with_the_same_token() {
    let (access, ws) = (access(SPEC), workspace("k1"));
    let (secret, status, _) = issued(&access, &ws);
    let mut inputs = inputs(
        &access,
        &ws,
        ObservedToken::Digest { secret: &secret, token: TokenMatch::Same },
        Some(&status),
        t0(),
    );
    inputs.secret_lacks = &always_lacks;
    let kept = kept_plan(plan(&inputs).unwrap());
    assert_eq!(kept.repair, Some(secret), "the Secret as written, token kept");
}

#[test]
fn no_secret_output_plans_no_token_and_a_clerk_output_plans_its_template_and_configmap() {
    let ws = workspace("k1");
    let clerk_only = access("workspaceRef: {name: a}\nscopes: [{resource: top_pages}]\nclerkTemplate: {}\n");
    let planned = plan(&inputs(&clerk_only, &ws, ObservedToken::Absent, None, t0())).unwrap();
    assert!(planned.token.is_none());
    let clerk = planned.clerk.expect("a Clerk plan");
    assert_eq!(clerk.template.claims.access.workspace_id, ws.workspace_id);
    assert_eq!(clerk.configmap.metadata.owner_references, Some(vec![owner()]));

    let secret_only = access(SPEC);
    assert!(plan(&inputs(&secret_only, &ws, ObservedToken::Absent, None, t0())).unwrap().clerk.is_none());
}

const RESYNC: Duration = Duration::from_secs(600);

#[test]
fn a_tenant_access_without_a_token_is_looked_at_again_within_the_resync() {
    let access = access(SPEC);
    let after = look_again(None, &access, t0(), RESYNC);
    assert!(after > RESYNC * 9 / 10 && after <= RESYNC, "{after:?}");
    assert_eq!(look_again(None, &access, t0(), RESYNC), after, "the same for the same object");
}

#[test]
fn a_token_due_before_the_resync_is_looked_at_again_exactly_at_its_renewal_time() {
    let access = access(SPEC);
    let renewal = t0() + SignedDuration::from_secs(125);
    assert_eq!(look_again(Some(renewal), &access, t0(), RESYNC), Duration::from_secs(125));
}

#[test]
fn a_token_due_after_the_resync_is_looked_at_again_at_the_resync() {
    let access = access(SPEC);
    let renewal = t0() + SignedDuration::from_hours(1);
    assert_eq!(look_again(Some(renewal), &access, t0(), RESYNC), look_again(None, &access, t0(), RESYNC));
}

#[test]
fn a_token_already_due_is_looked_at_again_at_once() {
    let access = access(SPEC);
    let renewal = t0() - SignedDuration::from_secs(1);
    assert_eq!(look_again(Some(renewal), &access, t0(), RESYNC), Duration::ZERO);
}

#[test]
fn tenant_accesses_reconciled_together_resync_spread_over_the_last_tenth_of_the_resync() {
    let afters: Vec<Duration> = (0..200)
        .map(|i| {
            let spec: crate::api::TenantAccessSpec = serde_saphyr::from_str(SPEC).unwrap();
            let access =
                crate::core::validate::validate_tenant_access("acme", &format!("t{i}"), &spec).unwrap();
            look_again(None, &access, t0(), RESYNC)
        })
        .collect();
    let (earliest, latest) = (afters.iter().min().unwrap(), afters.iter().max().unwrap());
    assert!(*earliest > RESYNC * 9 / 10 && *latest <= RESYNC, "{earliest:?}..{latest:?}");
    assert!(*latest - *earliest >= Duration::from_secs(55), "{earliest:?}..{latest:?}");
}

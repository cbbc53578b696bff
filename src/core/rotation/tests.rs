use super::*;

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn progress(on_new_key: u32, total: u32) -> RotationProgress {
    RotationProgress { on_new_key, total }
}

const HOUR: Duration = Duration::from_secs(3600);

#[test]
fn a_first_sight_counts_the_annotation_as_handled_and_starts_the_schedule() {
    let now = at("2026-01-01T00:00:00Z");
    let status = baseline(Some("from-a-manifest"), Some(("1h", HOUR)), now);
    assert_eq!(status.handled_request.as_deref(), Some("from-a-manifest"));
    assert_eq!(status.next_rotation_time, Some(Time(at("2026-01-01T01:00:00Z"))));
    assert_eq!(next_step(Some("from-a-manifest"), &status, now), Step::Idle);
}

#[test]
fn a_new_annotation_value_starts_a_rotation_once() {
    let now = at("2026-01-01T00:00:00Z");
    let status = baseline(Some("1"), None, now);
    let step = next_step(Some("2"), &status, now);
    assert_eq!(step, Step::Start { request: "2".into(), trigger: trigger::ANNOTATION });
    let started = started(&status, ("2", trigger::ANNOTATION), Some("sha256:old"), None, now);
    assert_eq!(started.history[0].phase, phase::REFRESHING);
    assert_eq!(started.history[0].old_key_fingerprint.as_deref(), Some("sha256:old"));
    // While refreshing, nothing else starts; once landed and complete, the same value is done.
    assert_eq!(next_step(Some("2"), &started, now), Step::Refreshing);
    let landed = landed(&started, "sha256:new", now);
    assert_eq!(next_step(Some("2"), &landed, now), Step::Track);
    let done = progressed(&landed, (progress(3, 3), progress(0, 0)), None, now);
    assert_eq!(done.history[0].phase, phase::COMPLETE);
    assert_eq!(next_step(Some("2"), &done, now), Step::Idle);
}

#[test]
fn the_cli_prefix_names_the_trigger_and_an_annotation_cannot_pass_for_the_schedule() {
    let now = at("2026-01-01T00:00:00Z");
    let status = baseline(None, None, now);
    assert_eq!(
        next_step(Some("cli-20260101-abc"), &status, now),
        Step::Start { request: "cli-20260101-abc".into(), trigger: trigger::CLI }
    );
    assert_eq!(
        next_step(Some("schedule-x"), &status, now),
        Step::Start { request: "schedule-x".into(), trigger: trigger::ANNOTATION }
    );
}

#[test]
fn long_or_odd_annotation_values_are_kept_as_a_bounded_hash() {
    let long = "x".repeat(10_000);
    let id = request_id(&long);
    assert!(id.len() <= 32, "{id}");
    assert_eq!(id, request_id(&long));
    assert!(request_id("line\nbreak").starts_with("sha256:"));
    assert_eq!(request_id("2026-05-01 incident"), "2026-05-01 incident");
}

#[test]
fn the_schedule_fires_when_due_and_moves_one_interval_on_when_taken_up() {
    let start = at("2026-01-01T00:00:00Z");
    let status = baseline(None, Some(("1h", HOUR)), start);
    assert_eq!(next_step(None, &status, at("2026-01-01T00:59:59Z")), Step::Idle);
    let due = at("2026-01-01T01:00:00Z");
    let Step::Start { request, trigger } = next_step(None, &status, due) else { panic!("not due") };
    assert_eq!(trigger, trigger::SCHEDULE);
    assert_eq!(request, "schedule-2026-01-01T01:00:00Z");
    let started = started(&status, (&request, trigger), Some("sha256:old"), Some(HOUR), due);
    assert_eq!(started.next_rotation_time, Some(Time(at("2026-01-01T02:00:00Z"))));
    assert_eq!(started.handled_request, None, "a schedule is not an annotation request");
}

#[tokio::test(start_paused = true)]
async fn the_schedule_follows_the_injected_clock() {
    let clock = crate::core::clock::Clock::following_tokio(at("2026-01-01T00:00:00Z"));
    let status = baseline(None, Some(("2h", 2 * HOUR)), clock.now());
    tokio::time::advance(2 * HOUR - Duration::from_secs(1)).await;
    assert_eq!(next_step(None, &status, clock.now()), Step::Idle);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(matches!(next_step(None, &status, clock.now()), Step::Start { trigger: trigger::SCHEDULE, .. }));
}

#[test]
fn a_changed_interval_counts_from_the_last_refresh_and_a_removed_one_stops_the_schedule() {
    let start = at("2026-01-01T00:00:00Z");
    let status = baseline(None, Some(("1h", HOUR)), start);
    let started = started(&status, ("1", trigger::ANNOTATION), None, Some(HOUR), start);
    let mut landed = landed(&started, "sha256:new", at("2026-01-01T00:10:00Z"));
    assert!(reschedule(&mut landed, Some(("3h", 3 * HOUR)), at("2026-01-01T00:20:00Z")));
    assert_eq!(landed.next_rotation_time, Some(Time(at("2026-01-01T03:10:00Z"))));
    assert!(!reschedule(&mut landed, Some(("3h", 3 * HOUR)), at("2026-01-01T00:30:00Z")));
    assert!(reschedule(&mut landed, None, start));
    assert_eq!(landed.next_rotation_time, None);
}

#[test]
fn an_interval_under_a_minute_is_refused_and_zero_is_off() {
    let spec = |text: &str| RotationSpec { interval: Some(text.into()) };
    assert!(interval(Some(&spec("30s"))).unwrap_err().contains("spec.rotation.interval"));
    assert_eq!(interval(Some(&spec("0"))), Ok(None));
    assert_eq!(interval(None), Ok(None));
    assert_eq!(interval(Some(&spec("720h"))), Ok(Some(720 * HOUR)));
}

#[test]
fn a_new_request_supersedes_a_rotation_still_resigning() {
    let now = at("2026-01-01T00:00:00Z");
    let first = started(&baseline(None, None, now), ("1", trigger::ANNOTATION), Some("a"), None, now);
    let first = landed(&first, "b", now);
    let second = started(&first, ("2", trigger::ANNOTATION), Some("b"), None, now);
    assert_eq!(second.history[1].phase, phase::SUPERSEDED);
    assert_eq!(second.history[0].phase, phase::REFRESHING);
}

#[test]
fn the_history_keeps_the_last_five() {
    let now = at("2026-01-01T00:00:00Z");
    let mut status = baseline(None, None, now);
    for n in 0..8 {
        status = started(&status, (&n.to_string(), trigger::ANNOTATION), None, None, now);
        status = ended(&status, phase::NOT_REFRESHED, "no".into());
    }
    assert_eq!(status.history.len(), MAX_HISTORY);
    assert_eq!(status.history[0].request, "7");
}

#[test]
fn progress_records_when_secrets_then_templates_were_all_on_the_new_key() {
    let refreshed = at("2026-01-01T00:00:00Z");
    let status = started(&baseline(None, None, refreshed), ("1", trigger::CLI), Some("a"), None, refreshed);
    let status = landed(&status, "b", refreshed);
    let status = progressed(&status, (progress(5, 10), progress(0, 4)), None, at("2026-01-01T00:00:01Z"));
    assert_eq!(status.history[0].phase, phase::RESIGNING);
    assert_eq!(status.history[0].secrets_on_new_key_after, None);
    let status = progressed(&status, (progress(10, 10), progress(1, 4)), None, at("2026-01-01T00:00:02.5Z"));
    assert_eq!(status.history[0].secrets_on_new_key_after.as_deref(), Some("2.5s"));
    assert_eq!(status.history[0].phase, phase::RESIGNING);
    let status = progressed(&status, (progress(10, 10), progress(4, 4)), None, at("2026-01-01T00:00:09Z"));
    assert_eq!(status.history[0].secrets_on_new_key_after.as_deref(), Some("2.5s"));
    assert_eq!(status.history[0].templates_on_new_key_after.as_deref(), Some("9.0s"));
    assert_eq!(status.history[0].phase, phase::COMPLETE);
}

#[test]
fn a_restart_never_refreshes_again_it_judges_the_secrets_token() {
    let now = at("2026-01-01T00:00:00Z");
    let status = started(&baseline(None, None, now), ("1", trigger::CLI), Some("old"), None, now);
    let record = &status.history[0];
    assert_eq!(recovered(record, "old", true), Recovery::NotRefreshed);
    assert_eq!(recovered(record, "new", true), Recovery::Landed);
    assert_eq!(recovered(record, "old", false), Recovery::KeyLost);
    let lost = ended(&status, phase::KEY_LOST, key_lost_message("1", "ns/admin"));
    assert_eq!(next_step(Some("1"), &lost, now), Step::Lost);
    assert!(!found_again(&lost.history[0], "old", true));
    assert!(!found_again(&lost.history[0], "put-by-hand", false));
    assert!(found_again(&lost.history[0], "put-by-hand", true));
    let condition = condition(&lost, None).unwrap();
    assert!(!condition.status);
    assert_eq!(condition.reason, reason::KEY_LOST);
    assert!(condition.message.contains("tb token refresh"), "{}", condition.message);
    assert!(condition.message.contains("ns/admin"));
}

#[test]
fn clerk_pushes_of_the_new_key_wait_until_every_secret_is_on_it_for_a_minute_at_most() {
    let refreshed = at("2026-01-01T00:00:00Z");
    let status = started(&baseline(None, None, refreshed), ("1", trigger::CLI), Some("a"), None, refreshed);
    assert!(!holds_clerk(&status, "b", refreshed), "nothing to hold before the key is in the Secret");
    let status = landed(&status, "b", refreshed);
    assert!(holds_clerk(&status, "b", at("2026-01-01T00:00:05Z")));
    assert!(!holds_clerk(&status, "c", at("2026-01-01T00:00:05Z")), "another key is not this rotation's");
    assert!(!holds_clerk(&status, "b", at("2026-01-01T00:01:00Z")), "held a minute at most");
    let done = progressed(&status, (progress(3, 3), progress(0, 3)), None, at("2026-01-01T00:00:06Z"));
    assert!(secrets_done(&done));
    assert!(!holds_clerk(&done, "b", at("2026-01-01T00:00:06Z")));
}

#[test]
fn a_completed_rotation_of_a_secret_another_tool_manages_says_to_update_its_source() {
    let now = at("2026-01-01T00:00:00Z");
    let started =
        started(&baseline(None, None, now), ("2", trigger::ANNOTATION), Some("sha256:old"), None, now);
    let landed = landed(&started, "sha256:new", now);
    let tracking = progressed(&landed, (progress(1, 3), progress(0, 0)), Some("Argo CD (label x)"), now);
    assert_eq!(tracking.history[0].message, landed.history[0].message, "said once it is done");
    let done = progressed(&landed, (progress(3, 3), progress(0, 0)), Some("Argo CD (label x)"), now);
    let message = done.history[0].message.as_deref().unwrap();
    assert!(
        message.starts_with("every token Secret (3) and Clerk template (0) is on the new key. But "),
        "{message}"
    );
    assert!(message.contains(&crate::core::secret_writers::rotation_note("Argo CD (label x)")), "{message}");
}

#![allow(clippy::unwrap_used)]

use super::*;

fn hosts() -> Vec<String> {
    vec!["webhook.tenant-access-system.svc".into(), "127.0.0.1".into()]
}

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

const VALIDITY: Validity =
    Validity { ca: Duration::from_secs(300 * 86_400), serving: Duration::from_secs(30 * 86_400) };

#[test]
fn a_new_material_round_trips_through_the_secret() {
    let made = renew(None, Renewal::All, &hosts(), at("2026-01-01T00:00:00Z"), VALIDITY).unwrap();
    assert_eq!(made.cert_not_after, at("2026-01-31T00:00:00Z"));
    assert_eq!(made.ca_not_after, at("2026-10-28T00:00:00Z"));
    let (data, annotations) = made.to_secret();
    assert_eq!(Material::from_secret(&data, &annotations), Some(made.clone()));
    // The serving certificate and key are what rustls serves.
    let serving = super::super::tls::ServingCert::default();
    assert!(serving.load(made.cert.as_bytes(), made.key.as_bytes()).unwrap());
    assert!(
        !serving.load(made.cert.as_bytes(), made.key.as_bytes()).unwrap(),
        "the same certificate is no change"
    );
}

#[test]
fn renewals_fall_due_with_a_third_of_the_validity_left() {
    let made = renew(None, Renewal::All, &hosts(), at("2026-01-01T00:00:00Z"), VALIDITY).unwrap();
    assert_eq!(made.due(&hosts(), at("2026-01-20T23:59:59Z"), VALIDITY), Renewal::None);
    assert_eq!(made.due(&hosts(), at("2026-01-21T00:00:00Z"), VALIDITY), Renewal::Serving);
    assert_eq!(made.due(&["other.svc".to_owned()], at("2026-01-02T00:00:00Z"), VALIDITY), Renewal::Serving);
    assert_eq!(made.due(&hosts(), at("2026-08-01T00:00:00Z"), VALIDITY), Renewal::All);
    assert_eq!(made.next_renewal(VALIDITY), at("2026-01-21T00:00:00Z"));
}

#[test]
fn a_serving_renewal_keeps_the_ca_and_a_ca_renewal_keeps_the_old_ca_in_the_bundle() {
    let first = renew(None, Renewal::All, &hosts(), at("2026-01-01T00:00:00Z"), VALIDITY).unwrap();
    let serving =
        renew(Some(&first), Renewal::Serving, &hosts(), at("2026-01-21T00:00:00Z"), VALIDITY).unwrap();
    assert_eq!((&serving.ca_cert, &serving.ca_key), (&first.ca_cert, &first.ca_key));
    assert_ne!(serving.cert, first.cert);
    assert_eq!(serving.ca_bundle(at("2026-01-21T00:00:00Z")), first.ca_cert);

    let now = at("2026-08-01T00:00:00Z");
    let rotated = renew(Some(&serving), Renewal::All, &hosts(), now, VALIDITY).unwrap();
    assert_ne!(rotated.ca_cert, first.ca_cert);
    assert_eq!(rotated.ca_bundle(now), format!("{}{}", rotated.ca_cert, first.ca_cert));
    assert_eq!(
        rotated.ca_bundle(at("2026-10-28T00:00:00Z")),
        rotated.ca_cert,
        "an expired CA leaves the bundle"
    );
}

#[test]
fn a_serving_certificate_never_outlives_its_ca() {
    let first = renew(None, Renewal::All, &hosts(), at("2026-01-01T00:00:00Z"), VALIDITY).unwrap();
    let late = renew(Some(&first), Renewal::Serving, &hosts(), at("2026-10-20T00:00:00Z"), VALIDITY).unwrap();
    assert_eq!(late.cert_not_after, first.ca_not_after);
}

#[test]
fn a_garbled_secret_is_made_anew() {
    let made = renew(None, Renewal::All, &hosts(), at("2026-01-01T00:00:00Z"), VALIDITY).unwrap();
    let (mut data, annotations) = made.to_secret();
    data.remove("tls.key");
    assert_eq!(Material::from_secret(&data, &annotations), None);
}

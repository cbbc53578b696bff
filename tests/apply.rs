//! The operator's writes against a real API server: a token Secret created "blind" (the Secret
//! watch never saw its name, so no GET first) must not take over a Secret that appeared in the
//! meantime with a conflicting field.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use tenant_access::adapters::apply::{Ownership, apply_secret};
use tenant_access::core::well_known::{LABEL_MANAGED_BY, OPERATOR_NAME};
use tenant_access_testkit::TestCluster;

/// Secret `reader` holding `token`, labelled as the operator's when `managed`.
fn secret(namespace: &str, token: &str, managed: bool) -> Secret {
    let mut secret = Secret::default();
    secret.metadata.name = Some("reader".into());
    secret.metadata.namespace = Some(namespace.into());
    if managed {
        secret.metadata.labels = Some([(LABEL_MANAGED_BY.to_owned(), OPERATOR_NAME.to_owned())].into());
    }
    secret.data = Some([("token".to_owned(), k8s_openapi::ByteString(token.as_bytes().to_vec()))].into());
    secret
}

#[tokio::test]
async fn a_blind_create_fails_on_a_foreign_secret_with_a_conflicting_field_and_changes_nothing() {
    let cluster = TestCluster::shared().await.unwrap();
    let ns = cluster.namespace("apply").await.unwrap();
    let client = cluster.client().await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(client, ns.name());

    // Absent: created, and owned by the operator's field manager (later forced applies own it).
    let created = secret(ns.name(), "eyJ.first.token", true);
    let written = apply_secret(&secrets, &created, Ownership::NoForce).await.unwrap();
    assert!(
        written
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .any(|m| m.manager.as_deref() == Some(tenant_access::core::well_known::FIELD_MANAGER)
                && m.operation.as_deref() == Some("Apply"))
    );
    secrets.delete("reader", &Default::default()).await.unwrap();

    // Someone else's Secret of the same name with its own token: a blind create is refused (409)
    // and the Secret is left exactly as it was.
    let foreign = secrets.create(&PostParams::default(), &secret(ns.name(), "theirs", false)).await.unwrap();
    let error = apply_secret(&secrets, &created, Ownership::NoForce).await.unwrap_err();
    assert!(matches!(&error, kube::Error::Api(status) if status.code == 409), "{error}");
    let after = secrets.get("reader").await.unwrap();
    assert_eq!(after.metadata.resource_version, foreign.metadata.resource_version, "unchanged");
    assert_eq!(after.data.unwrap()["token"].0, b"theirs");
}

use std::time::Duration;

use super::*;
use crate::core::backoff::Backoff;

const SECRET_KEY: &str = "sk_test_unit0123456789abcdefghijklmnopqrstuv";

fn registry() -> ClerkClients {
    ClerkClients::new(ClerkClientOptions {
        max_attempts: 2,
        backoff: Backoff { base: Duration::from_millis(1), cap: Duration::from_millis(2) },
        ..ClerkClientOptions::default()
    })
    .unwrap()
}

#[test]
fn debug_never_shows_the_secret_key() {
    let clients = registry();
    let client = clients.get_or_create(DEFAULT_API_URL, SECRET_KEY).unwrap();
    let printed = format!("{client:?} {clients:?}");
    assert!(!printed.contains(SECRET_KEY), "{printed}");
    assert!(printed.contains("sha256:"), "{printed}");
}

#[test]
fn clients_of_one_instance_share_a_limiter() {
    let clients = registry();
    let first = clients.get_or_create("https://api.clerk.com/v1", SECRET_KEY).unwrap();
    let same = clients.get_or_create("https://api.clerk.com/v1/", &format!("{SECRET_KEY}\n")).unwrap();
    let other_key = clients.get_or_create("https://api.clerk.com/v1", "sk_test_other_key_000000000").unwrap();
    let other_url = clients.get_or_create("http://127.0.0.1:7182/v1", SECRET_KEY).unwrap();
    assert!(first.shares_limiter_with(&same));
    assert!(first.shares_limiter_with(&first.clone()));
    assert!(!first.shares_limiter_with(&other_key));
    assert!(!first.shares_limiter_with(&other_url));
    assert_eq!(first.api_url(), "https://api.clerk.com/v1");
    assert_eq!(clients.instance_count(), 3);
}

#[test]
fn idle_instances_without_clients_are_forgotten() {
    let clients = registry();
    drop(clients.get_or_create("https://one.example/v1", SECRET_KEY).unwrap());
    let kept = clients.get_or_create("https://two.example/v1", SECRET_KEY).unwrap();
    assert_eq!(clients.instance_count(), 1);
    let again = clients.get_or_create("https://two.example/v1", SECRET_KEY).unwrap();
    assert!(kept.shares_limiter_with(&again));
}

#[test]
fn refuses_unusable_api_urls() {
    let clients = registry();
    for url in ["not a url", "ftp://api.clerk.com/v1", "https://user:pw@api.clerk.com/v1", "https://a/v1?x=1"]
    {
        let error = clients.get_or_create(url, SECRET_KEY).unwrap_err();
        assert_eq!(error.reason(), "InvalidSpec", "{url}");
    }
    let error = clients.get_or_create(DEFAULT_API_URL, "sk_test_bad\nkey").unwrap_err();
    assert_eq!(error.reason(), "Unauthorized");
    assert!(!error.to_string().contains("sk_test_bad"));
}

#[tokio::test]
async fn ids_that_cannot_name_a_template_never_reach_the_network() {
    // Port 9 (discard) is never a Clerk: any request would fail as ClerkUnavailable.
    let client = registry().get_or_create("http://127.0.0.1:9/v1", SECRET_KEY).unwrap();
    assert_eq!(client.get("../jwt_templates").await.unwrap_err().reason(), "NotFound");
    assert_eq!(client.delete("a/b").await.unwrap(), DeleteOutcome::AlreadyAbsent);
    assert_eq!(client.get("").await.unwrap_err().reason(), "NotFound");
}

#[tokio::test]
async fn unreachable_clerk_is_unavailable_and_the_message_names_no_key() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let client = registry().get_or_create(&format!("http://127.0.0.1:{port}/v1"), SECRET_KEY).unwrap();
    let error = client.list_templates().await.unwrap_err();
    assert_eq!(error.reason(), "ClerkUnavailable");
    let text = error.to_string();
    assert!(!text.contains(SECRET_KEY) && !text.contains('\n'), "{text}");
    assert!(text.starts_with("listing Clerk JWT templates: Clerk unavailable: could not connect"), "{text}");
}

use super::*;

fn request(params: &[(&str, &str)]) -> ProbeRequest {
    let params: BTreeMap<String, String> =
        params.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect();
    ProbeRequest::new(
        "http://tinybird.local:7181/",
        "top_pages",
        &params,
        "eyJ.probe.token".into(),
        Duration::from_secs(2),
    )
}

#[test]
fn params_are_percent_encoded_so_a_value_cannot_add_a_parameter() {
    let probe = request(&[("day", "2024-01-01&q=SELECT * FROM other#x"), ("limit", "1 OR 1=1")]);
    let http = probe.to_http(&reqwest::Client::new()).unwrap_or_else(|e| panic!("{e}"));
    let url = http.url();
    assert_eq!(url.path(), "/v0/pipes/top_pages.json");
    assert_eq!(url.fragment(), None);
    let pairs: Vec<(String, String)> =
        url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    assert_eq!(
        pairs,
        [
            ("day".to_owned(), "2024-01-01&q=SELECT * FROM other#x".to_owned()),
            ("limit".to_owned(), "1 OR 1=1".to_owned())
        ],
        "exactly the params given, nothing added: {url}"
    );
    assert!(!url.as_str().contains("token"), "the token never goes in the URL: {url}");
    let header = http.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    assert_eq!(header, Some("Bearer eyJ.probe.token"));
    assert_eq!(http.timeout(), Some(&Duration::from_secs(2)));
}

#[test]
fn a_token_param_is_never_sent() {
    let probe = request(&[("token", "p.eyJ.other"), ("limit", "1")]);
    assert_eq!(probe.params(), [("limit".to_owned(), "1".to_owned())]);
}

#[test]
fn an_existence_check_url_cannot_carry_a_format_suffix_or_a_path() {
    let key = AdminToken::new("p.admin");
    let timeout = Duration::from_secs(1);
    for (resource, path) in [
        ("top_pages", "/v0/pipes/top_pages"),
        ("top_pages.json", "/v0/pipes/top_pages%2Ejson"),
        ("../../v0/sql?q=1#x", "/v0/pipes/%2E%2E%2F%2E%2E%2Fv0%2Fsql%3Fq%3D1%23x"),
    ] {
        let request = ProbeRequest::existence("http://tinybird.local:7181/", resource, &key, timeout);
        let http = request.to_http(&reqwest::Client::new()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(http.url().path(), path, "{resource:?}");
        assert_eq!(http.url().query(), None, "{resource:?}");
        assert_eq!(http.url().fragment(), None, "{resource:?}");
    }
}

#[tokio::test]
async fn a_resource_outside_tinybirds_alphabet_is_never_sent() {
    // A listener that would record any connection: nothing may reach it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
    let api_url = format!("http://{}", listener.local_addr().unwrap_or_else(|e| panic!("{e}")));
    let prober = HttpProber::new().unwrap_or_else(|e| panic!("{e}"));
    let key = AdminToken::new("p.admin");
    for resource in ["top_pages.json", "top-pages", "a/b", ""] {
        let existence = ProbeRequest::existence(&api_url, resource, &key, Duration::from_secs(1));
        let outcome = prober.probe_once(&existence).await;
        assert_eq!(outcome.status_code, None, "{resource:?}: {outcome:?}");
        assert!(outcome.message.contains("not a Tinybird resource name"), "{outcome:?}");
        let probe =
            ProbeRequest::new(&api_url, resource, &BTreeMap::new(), "eyJ.t".into(), Duration::from_secs(1));
        assert_eq!(prober.probe_once(&probe).await.status_code, None, "{resource:?}");
    }
    let accepted = tokio::time::timeout(Duration::from_millis(50), listener.accept()).await;
    assert!(accepted.is_err(), "a request reached the listener");
}

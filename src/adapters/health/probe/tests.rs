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

//! The two text formats `/metrics` serves: OpenMetrics 1.0 (what `prometheus-client` encodes)
//! and the Prometheus text format 0.0.4 (what a scraper gets unless it asks for OpenMetrics).
//!
//! The Prometheus text is converted from the OpenMetrics text, line by line:
//! - a counter family `x` is named after its samples, `x_total` (HELP and TYPE lines);
//! - `x_created` samples of counters, histograms and summaries are dropped (0.0.4 has none);
//! - an `info` family `x` becomes the gauge `x_info`, `unknown` becomes `untyped`,
//!   `stateset` a gauge and `gaugehistogram` a histogram;
//! - `# UNIT` and `# EOF` lines and exemplars are dropped.

use std::collections::HashMap;

/// The media type of OpenMetrics text.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The media type of the Prometheus text format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Which text format to answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0.
    OpenMetrics,
    /// Prometheus text 0.0.4.
    Prometheus,
}

impl Format {
    /// The format an `Accept` header asks for: OpenMetrics when it accepts
    /// `application/openmetrics-text` (with a non-zero quality), the Prometheus text otherwise
    /// (no header, `text/plain`, `*/*`).
    #[must_use]
    pub fn negotiate(accept: Option<&str>) -> Self {
        let accepts_openmetrics = accept.unwrap_or_default().split(',').any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default();
            let quality =
                parts.filter_map(|p| p.strip_prefix("q=")).find_map(|q| q.parse::<f64>().ok()).unwrap_or(1.0);
            media.eq_ignore_ascii_case("application/openmetrics-text") && quality > 0.0
        });
        if accepts_openmetrics { Self::OpenMetrics } else { Self::Prometheus }
    }

    /// The `Content-Type` of an answer in this format.
    #[must_use]
    pub const fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            Self::Prometheus => PROMETHEUS_CONTENT_TYPE,
        }
    }
}

/// The name under which the Prometheus text exposes family `name` of OpenMetrics type `kind`,
/// and the type it gives it.
fn prometheus_family<'a>(name: &str, kind: &'a str) -> (String, &'a str) {
    match kind {
        "counter" => (format!("{name}_total"), "counter"),
        "info" => (format!("{name}_info"), "gauge"),
        "stateset" => (name.to_owned(), "gauge"),
        "gaugehistogram" => (name.to_owned(), "histogram"),
        "unknown" => (name.to_owned(), "untyped"),
        other => (name.to_owned(), other),
    }
}

/// The metric name of a sample line (before its labels or value).
fn sample_name(line: &str) -> &str {
    let end = line.find(['{', ' ']).unwrap_or(line.len());
    &line[..end]
}

/// Where the label set of a sample line ends (just after its `}`; 0 without labels): label
/// values are quoted and may hold `}` or ` # `.
fn labels_end(line: &str) -> usize {
    if !line[sample_name(line).len()..].starts_with('{') {
        return 0;
    }
    let (mut quoted, mut escaped) = (false, false);
    for (at, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '}' if !quoted => return at + 1,
            _ => {}
        }
    }
    0
}

/// A sample line without its exemplar (` # {...} value`, after the labels and the value).
fn without_exemplar(line: &str) -> &str {
    let labels_end = labels_end(line);
    match line[labels_end..].find(" # ") {
        Some(at) => &line[..labels_end + at],
        None => line,
    }
}

/// Converts OpenMetrics text (as `prometheus-client` encodes it) into the Prometheus text
/// format 0.0.4.
#[must_use]
pub fn openmetrics_to_prometheus(openmetrics: &str) -> String {
    let kinds: HashMap<&str, &str> =
        openmetrics.lines().filter_map(|line| line.strip_prefix("# TYPE ")?.split_once(' ')).collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            let (exposed, _) = prometheus_family(name, kinds.get(name).copied().unwrap_or("unknown"));
            out.push_str(&format!("# HELP {exposed} {help}\n"));
        } else if let Some((name, kind)) = line.strip_prefix("# TYPE ").and_then(|r| r.split_once(' ')) {
            let (exposed, kind) = prometheus_family(name, kind);
            out.push_str(&format!("# TYPE {exposed} {kind}\n"));
        } else if line.starts_with('#') || line.is_empty() {
            // `# UNIT`, `# EOF`: not part of the Prometheus text format.
        } else {
            let name = sample_name(line);
            let created_of = name
                .strip_suffix("_created")
                .and_then(|family| kinds.get(family))
                .is_some_and(|kind| matches!(*kind, "counter" | "histogram" | "summary" | "gaugehistogram"));
            if !created_of {
                out.push_str(without_exemplar(line));
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENMETRICS: &str = "# HELP app_requests Requests.\n\
        # TYPE app_requests counter\n\
        app_requests_total{call=\"verify\",outcome=\"a } # b\"} 3 # {trace=\"1\"} 1.0\n\
        app_requests_created{call=\"verify\",outcome=\"ok\"} 1700000000.0\n\
        # HELP app_latency_seconds Latency.\n\
        # TYPE app_latency_seconds histogram\n\
        # UNIT app_latency_seconds seconds\n\
        app_latency_seconds_sum 0.5\n\
        app_latency_seconds_count 1\n\
        app_latency_seconds_bucket{le=\"+Inf\"} 1\n\
        # HELP app_build Build.\n\
        # TYPE app_build info\n\
        app_build_info{version=\"1.0\"} 1\n\
        # HELP app_other Other.\n\
        # TYPE app_other unknown\n\
        app_other 2\n\
        # EOF\n";

    #[test]
    fn openmetrics_becomes_prometheus_text() {
        let expected = "# HELP app_requests_total Requests.\n\
            # TYPE app_requests_total counter\n\
            app_requests_total{call=\"verify\",outcome=\"a } # b\"} 3\n\
            # HELP app_latency_seconds Latency.\n\
            # TYPE app_latency_seconds histogram\n\
            app_latency_seconds_sum 0.5\n\
            app_latency_seconds_count 1\n\
            app_latency_seconds_bucket{le=\"+Inf\"} 1\n\
            # HELP app_build_info Build.\n\
            # TYPE app_build_info gauge\n\
            app_build_info{version=\"1.0\"} 1\n\
            # HELP app_other Other.\n\
            # TYPE app_other untyped\n\
            app_other 2\n";
        assert_eq!(openmetrics_to_prometheus(OPENMETRICS), expected);
    }

    #[test]
    fn only_a_scraper_that_accepts_openmetrics_gets_it() {
        let prometheus_default = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus_default)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("text/plain;version=0.0.4")), Format::Prometheus);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Prometheus);
        assert_eq!(Format::negotiate(None), Format::Prometheus);
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0, text/plain")),
            Format::Prometheus
        );
    }
}

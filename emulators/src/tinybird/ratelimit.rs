//! Per-token-name rate limits: one bucket per (workspace, pipe as written in the URL, JWT
//! `name`), holding `limits.rps` requests per one-second window. Tinybird's "Rate limits for
//! JWTs" docs: the limit applies per token name, so two tokens with one `name` share a bucket
//! (which is why a Clerk template's name must carry the user to give each user a limit).

use std::collections::HashMap;
use std::sync::Mutex;

use axum::http::HeaderName;
use axum::http::header::RETRY_AFTER;

use crate::sync::lock;

const WINDOW_MS: i64 = 1_000;

/// The outcome of counting one request against a bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RateDecision {
    pub(crate) allowed: bool,
    pub(crate) limit: u32,
    pub(crate) remaining: u32,
    /// Whole seconds until the window resets (at least 1).
    pub(crate) reset_secs: u64,
}

impl RateDecision {
    /// `X-RateLimit-*` headers, plus `Retry-After` when refused.
    pub(crate) fn headers(&self) -> Vec<(HeaderName, String)> {
        let mut headers = vec![
            (HeaderName::from_static("x-ratelimit-limit"), self.limit.to_string()),
            (HeaderName::from_static("x-ratelimit-remaining"), self.remaining.to_string()),
            (HeaderName::from_static("x-ratelimit-reset"), self.reset_secs.to_string()),
        ];
        if !self.allowed {
            headers.push((RETRY_AFTER, self.reset_secs.to_string()));
        }
        headers
    }
}

#[derive(Debug, Default)]
pub(crate) struct RateLimiter {
    windows: Mutex<HashMap<BucketKey, Window>>,
}

/// Workspace id, pipe as written in the URL, JWT `name`.
type BucketKey = (String, String, String);

#[derive(Clone, Copy, Debug)]
struct Window {
    started_ms: i64,
    count: u32,
}

impl RateLimiter {
    /// Counts a request of token `name` of `workspace` on `pipe` at `now_ms` against `limit`
    /// per second.
    pub(crate) fn check(
        &self,
        workspace: &str,
        pipe: &str,
        name: &str,
        limit: u32,
        now_ms: i64,
    ) -> RateDecision {
        let mut windows = lock(&self.windows);
        let window = windows
            .entry((workspace.to_owned(), pipe.to_owned(), name.to_owned()))
            .or_insert(Window { started_ms: now_ms, count: 0 });
        if now_ms >= window.started_ms + WINDOW_MS || now_ms < window.started_ms {
            *window = Window { started_ms: now_ms, count: 0 };
        }
        let allowed = window.count < limit;
        if allowed {
            window.count += 1;
        }
        let until_reset_ms = (window.started_ms + WINDOW_MS - now_ms).max(1);
        RateDecision {
            allowed,
            limit,
            remaining: limit - window.count,
            reset_secs: u64::try_from((until_reset_ms + 999) / 1000).unwrap_or(1).max(1),
        }
    }

    /// Forgets every bucket.
    pub(crate) fn clear(&self) {
        lock(&self.windows).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_after_the_limit_within_one_window() {
        let limiter = RateLimiter::default();
        let first = limiter.check("ws", "top_pages", "tenant_a", 2, 10_000);
        assert!(first.allowed);
        assert_eq!(first.remaining, 1);
        assert!(limiter.check("ws", "top_pages", "tenant_a", 2, 10_100).allowed);
        let refused = limiter.check("ws", "top_pages", "tenant_a", 2, 10_200);
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.reset_secs, 1);
        assert!(limiter.check("ws", "top_pages", "tenant_a", 2, 11_000).allowed);
    }

    #[test]
    fn buckets_are_per_pipe_and_name() {
        let limiter = RateLimiter::default();
        assert!(limiter.check("ws", "top_pages", "a", 1, 0).allowed);
        assert!(!limiter.check("ws", "top_pages", "a", 1, 0).allowed);
        assert!(limiter.check("ws", "top_pages", "b", 1, 0).allowed);
        assert!(limiter.check("ws", "tenant_events", "a", 1, 0).allowed);
    }
}

//! When a failed request may be sent again, and how long to wait before it.
//!
//! Owns: the classification of failures (never reached the server, reached it
//! without an answer, answered with a status) and the backoff schedule.
//! Must not: do IO or sleep; the client applies the decision. A write that may
//! have reached LXD is never repeated: LXD would apply it twice or fail
//! confusingly ("already exists"), so the caller re-reads instead.

use std::time::Duration;

use super::api::Method;

/// How often and how patiently to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total tries, the first included.
    pub attempts: u32,
    /// Wait before the second try; doubled before each next one.
    pub initial_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { attempts: 3, initial_backoff: Duration::from_millis(200) }
    }
}

impl RetryPolicy {
    /// Never retry.
    pub fn none() -> Self {
        RetryPolicy { attempts: 1, initial_backoff: Duration::ZERO }
    }

    /// The wait before try number `next_try` (2 for the first retry).
    pub fn backoff(&self, next_try: u32) -> Duration {
        let doublings = next_try.saturating_sub(2).min(16);
        self.initial_backoff.saturating_mul(1u32 << doublings)
    }
}

/// How a try failed, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// No connection was made: nothing reached the server.
    NotConnected,
    /// The request was (or may have been) sent and no answer came: timeout, reset.
    NoAnswer,
    /// LXD answered with this HTTP status.
    Status(u16),
}

/// Whether a failed try may be repeated.
pub(crate) fn may_retry(method: Method, failure: Failure) -> bool {
    match failure {
        Failure::NotConnected => true,
        Failure::NoAnswer => method.is_idempotent_read(),
        // LXD reports validation errors as 500: only the gateway-style statuses a
        // busy or restarting member gives are worth a second read.
        Failure::Status(s) => method.is_idempotent_read() && matches!(s, 502..=504),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_retried_only_when_nothing_was_sent() {
        for m in [Method::Put, Method::Patch, Method::Post, Method::Delete] {
            assert!(may_retry(m, Failure::NotConnected), "{m}");
            assert!(!may_retry(m, Failure::NoAnswer), "{m}");
            assert!(!may_retry(m, Failure::Status(503)), "{m}");
            assert!(!may_retry(m, Failure::Status(500)), "{m}");
        }
    }

    #[test]
    fn reads_are_retried_on_transient_failures_only() {
        assert!(may_retry(Method::Get, Failure::NotConnected));
        assert!(may_retry(Method::Get, Failure::NoAnswer));
        assert!(may_retry(Method::Get, Failure::Status(503)));
        for s in [400, 403, 404, 409, 412, 500] {
            assert!(!may_retry(Method::Get, Failure::Status(s)), "{s}");
        }
    }

    #[test]
    fn backoff_doubles_from_200ms() {
        let p = RetryPolicy::default();
        assert_eq!(p.attempts, 3);
        assert_eq!(p.backoff(2), Duration::from_millis(200));
        assert_eq!(p.backoff(3), Duration::from_millis(400));
        assert_eq!(p.backoff(4), Duration::from_millis(800));
        assert_eq!(RetryPolicy::none().attempts, 1);
    }
}

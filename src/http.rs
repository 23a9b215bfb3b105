//! Outgoing HTTP with retries, in one place: the alert webhook, the notification channels
//! (Slack, webhook) and the Stripe push all send through [`with_retries`], so they agree
//! on what is worth retrying and how long to wait.
//!
//! - **Transient** (retried): a network error or timeout, HTTP 429 and 5xx. A
//!   `Retry-After` of seconds is honoured (capped at a minute); otherwise the delay starts
//!   at the configured backoff and doubles, capped at 30 s.
//! - **Permanent** (not retried in this run): any other non-2xx answer, such as a 400 for
//!   a malformed body or a 401 for a wrong key. The caller records it; a later run may
//!   try again once the cause is fixed.

use std::time::Duration;

/// How often and how patiently to try.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Tries in all (at least one is made).
    pub attempts: u32,
    /// The first delay; each next one doubles.
    pub backoff: Duration,
}

/// Why a try failed.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// Worth another try, after the server's `Retry-After` when it gave one.
    Transient(String, Option<Duration>),
    /// Not worth another try.
    Permanent(String),
}

impl Failure {
    /// The failure's text.
    pub fn message(&self) -> &str {
        match self {
            Failure::Transient(m, _) | Failure::Permanent(m) => m,
        }
    }
}

/// Longest wait between two tries.
const MAX_DELAY: Duration = Duration::from_secs(30);

/// Calls `try_once(n)` (n = 0, 1, ...) until it succeeds, fails permanently, or `r.attempts`
/// tries are used, sleeping between tries. Returns the outcome (the last failure's text on
/// failure) and the tries made.
pub fn with_retries<T>(
    r: Retry,
    mut try_once: impl FnMut(u32) -> Result<T, Failure>,
) -> (Result<T, String>, u32) {
    let mut delay = r.backoff;
    let attempts = r.attempts.max(1);
    let mut last = String::new();
    for n in 0..attempts {
        match try_once(n) {
            Ok(v) => return (Ok(v), n + 1),
            Err(Failure::Permanent(m)) => return (Err(m), n + 1),
            Err(Failure::Transient(m, after)) => {
                last = m;
                if n + 1 < attempts {
                    std::thread::sleep(after.unwrap_or(delay).min(Duration::from_secs(60)));
                    delay = (delay * 2).min(MAX_DELAY);
                }
            }
        }
    }
    (Err(last), attempts)
}

/// Whether `url` is an http(s) URL a request can be made to (scheme, host, no stray
/// characters): checked with the configuration, before a job runs.
pub fn check_url(url: &str) -> std::result::Result<(), String> {
    let bad = || format!("`{url}` is not an http(s) URL");
    let uri: ureq::http::Uri = url.parse().map_err(|_| bad())?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(h)) if !h.is_empty() => Ok(()),
        _ => Err(bad()),
    }
}

/// A blocking client whose answers of any status come back as responses (so they can be
/// classified), with a timeout for the whole request.
pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into()
}

/// Classifies a request's outcome: 2xx is success; 429 and 5xx (with their `Retry-After`)
/// and network errors are transient; other answers permanent.
pub fn outcome(
    res: std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<(), Failure> {
    match res {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => {
            let s = r.status().as_u16();
            let msg = format!("HTTP {s}");
            if s == 429 || s >= 500 {
                let after = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .map(|s| Duration::from_secs_f64(s.min(60.0)));
                Err(Failure::Transient(msg, after))
            } else {
                Err(Failure::Permanent(msg))
            }
        }
        // A request that cannot be made (a malformed URL) fails the same way every time.
        Err(e @ (ureq::Error::BadUri(_) | ureq::Error::Http(_))) => {
            Err(Failure::Permanent(e.to_string()))
        }
        Err(e) => Err(Failure::Transient(e.to_string(), None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_before_use() {
        assert!(check_url("https://hooks.example.com/x?y=1").is_ok());
        assert!(check_url("http://127.0.0.1:18500/down").is_ok());
        for bad in ["not a url", "ftp://x/y", "https://", "hooks.example.com/x"] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn retries_transient_failures_only() {
        let quick = Retry {
            attempts: 4,
            backoff: Duration::from_millis(1),
        };
        let mut seen = 0;
        let (r, n) = with_retries(quick, |i| {
            seen += 1;
            if i < 2 {
                Err(Failure::Transient("busy".into(), Some(Duration::ZERO)))
            } else {
                Ok(i)
            }
        });
        assert_eq!((r, n, seen), (Ok(2), 3, 3));
        let (r, n) = with_retries::<()>(quick, |_| Err(Failure::Permanent("HTTP 401".into())));
        assert_eq!((r, n), (Err("HTTP 401".into()), 1));
        let (r, n) = with_retries::<()>(quick, |i| Err(Failure::Transient(format!("t{i}"), None)));
        assert_eq!((r, n), (Err("t3".into()), 4));
    }
}

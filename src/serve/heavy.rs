//! The limit on heavy requests (lake scans, reports, forecasts): at most one at a time per
//! tenant, and at most N in all (`--heavy-concurrency`, default the number of cores).
//! Nothing waits for a slot: a request over the limit is refused at once with
//! `Retry-After`, so a burst of reports cannot pile up hundreds of blocking threads, and
//! one tenant cannot take every slot.

use std::collections::HashSet;
use std::sync::Mutex;

use axum::http::StatusCode;

use super::error::ApiError;

/// Slots for heavy work.
#[derive(Debug)]
pub struct Heavy {
    limit: usize,
    running: Mutex<HashSet<String>>,
}

/// A slot held while a heavy request runs; released on drop.
#[derive(Debug)]
pub struct Slot<'a> {
    heavy: &'a Heavy,
    tenant: String,
}

impl Heavy {
    /// At most `limit` heavy requests at once (at least 1).
    pub fn new(limit: usize) -> Heavy {
        Heavy {
            limit: limit.max(1),
            running: Mutex::new(HashSet::new()),
        }
    }

    /// Takes a slot for `tenant`: 429 when that tenant already holds one, 503 when all
    /// are taken.
    pub fn enter(&self, tenant: &str) -> Result<Slot<'_>, ApiError> {
        let mut r = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if r.contains(tenant) {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                Some("tenant"),
                format!("tenant {tenant} already has a heavy request running (reports, forecasts, scans run one at a time per tenant)"),
            )
            .retry_after(1));
        }
        if r.len() >= self.limit {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                None,
                format!(
                    "the server is running {} heavy requests, its limit (--heavy-concurrency)",
                    r.len()
                ),
            )
            .retry_after(1));
        }
        r.insert(tenant.to_string());
        Ok(Slot {
            heavy: self,
            tenant: tenant.to_string(),
        })
    }

    /// Heavy requests running now.
    pub fn running(&self) -> usize {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.heavy
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.tenant);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_per_tenant_and_n_in_all() {
        let h = Heavy::new(2);
        let a = h.enter("a").unwrap();
        assert_eq!(
            h.enter("a").unwrap_err().status(),
            StatusCode::TOO_MANY_REQUESTS
        );
        let b = h.enter("b").unwrap();
        assert_eq!(
            h.enter("c").unwrap_err().status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        drop(a);
        let _c = h.enter("c").unwrap();
        assert_eq!(h.running(), 2);
        drop(b);
        assert_eq!(h.running(), 1);
        let _a = h.enter("a").unwrap();
    }
}

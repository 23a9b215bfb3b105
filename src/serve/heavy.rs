//! Heavy requests (lake scans, reports, forecasts): at most one at a time per tenant, and
//! at most N in all (`--heavy-concurrency`, default the number of cores). Nothing waits
//! for a slot: a request over the limit is refused at once with `Retry-After`, so a burst
//! of reports cannot pile up hundreds of blocking threads, and one tenant cannot take
//! every slot.
//!
//! They run on a pool of their own whose threads, like polars' pool, run at a lower CPU
//! priority (`SCHED_IDLE` and nice 19, Linux: the lowest): when a report and a forecast keep both cores busy, the
//! threads answering `/track` and `/check-quota` still get a core as soon as a request
//! arrives, so heavy work costs those endpoints throughput at most, not latency.
//!
//! One limit: polars' pool is shared by the whole process, so the rare `/track` or
//! `/check-quota` that must scan the lake itself (a tenant's counters measured at its first
//! request or at a period rollover) runs that scan on the lowered pool, and waits longer
//! while heavy work keeps both cores busy.

use std::collections::HashSet;
use std::sync::Mutex;

use axum::http::StatusCode;

use super::error::ApiError;

/// Slots for heavy work, and the pool it runs on.
#[derive(Debug)]
pub struct Heavy {
    limit: usize,
    running: Mutex<HashSet<String>>,
    pool: Option<rayon::ThreadPool>,
}

/// The nice value of heavy work and of the analytics refresh: the lowest priority. At 10,
/// `/check-quota`'s p99 while a whole-lake refresh ran on the 1,000-tenant lake was
/// 1.68 ms; at 19, 0.38 to 1.5 ms over six runs (`benches/serve_refresh.rs`, 2 cores).
/// Those threads are also put in the `SCHED_IDLE` class (below), and the nice value is
/// the fallback where that is refused.
const NICE: i32 = 19;

/// Puts one thread of this process at the lowest priority: the `SCHED_IDLE` scheduling
/// class, whose threads run only when no normal thread wants the core, and which a
/// request thread preempts at once when it wakes (at nice 19 alone, the scheduler may
/// first let the low thread finish its slice: that was the tail of `/check-quota`). Any
/// thread may lower itself or a sibling so; if the kernel refuses, nice 19 instead.
#[cfg(target_os = "linux")]
fn lower_thread(tid: rustix::process::Pid) {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler only reads `param`, a valid sched_param that outlives the
    // call. `tid` comes from gettid or /proc/self/task; should that thread have exited
    // meanwhile, the call fails (or, if the id was reused, lowers another thread of this
    // process): an error code, never memory unsafety.
    let rc =
        unsafe { libc::sched_setscheduler(tid.as_raw_nonzero().get(), libc::SCHED_IDLE, &param) };
    if rc != 0 {
        tracing::debug!("SCHED_IDLE: {}", std::io::Error::last_os_error());
    }
    if let Err(e) = rustix::process::setpriority_process(Some(tid), NICE) {
        tracing::debug!("setpriority: {e}");
    }
}

/// Lowers the calling thread's CPU priority (Linux; elsewhere nothing).
pub(crate) fn lower_this_thread() {
    #[cfg(target_os = "linux")]
    lower_thread(rustix::thread::gettid());
}

/// Lowers the CPU priority of polars' worker threads (its pool, `polars-N`, and its
/// streaming engine's executor, `async-executor-N`), which every lake scan and rollup of a
/// heavy request runs on. Polars starts them lazily, so this runs before each heavy
/// request (a look at ~30 entries of `/proc/self/task`).
pub fn lower_polars_threads() {
    #[cfg(target_os = "linux")]
    {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return;
        };
        for t in tasks.flatten() {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            let tid = t.file_name().to_str().and_then(|s| s.parse::<i32>().ok());
            if (comm.starts_with("polars") || comm.starts_with("async-executor"))
                && let Some(pid) = tid.and_then(rustix::process::Pid::from_raw)
            {
                lower_thread(pid);
            }
        }
    }
}

/// A slot held while a heavy request runs; released on drop.
#[derive(Debug)]
pub struct Slot<'a> {
    heavy: &'a Heavy,
    tenant: String,
}

impl Heavy {
    /// At most `limit` heavy requests at once (at least 1), each on a thread of a pool of
    /// that size running at nice 19.
    pub fn new(limit: usize) -> Heavy {
        let limit = limit.max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(limit)
            .thread_name(|i| format!("mlk-heavy-{i}"))
            .start_handler(|_| lower_this_thread())
            .build()
            .map_err(|e| tracing::warn!("no pool for heavy requests ({e}); they run on tokio's"))
            .ok();
        Heavy {
            limit,
            running: Mutex::new(HashSet::new()),
            pool,
        }
    }

    /// Runs `f` on the heavy pool (or on tokio's blocking threads if it has none); a panic
    /// in `f` is an error, not a lost answer.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let caught = |f: Box<dyn FnOnce() -> Result<T, ApiError> + Send>| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    None,
                    format!("worker panicked: {msg}"),
                ))
            })
        };
        let f: Box<dyn FnOnce() -> Result<T, ApiError> + Send> = Box::new(f);
        let worker_gone = |e: String| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                format!("worker: {e}"),
            )
        };
        match &self.pool {
            Some(pool) => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                pool.spawn(move || {
                    let _ = tx.send(caught(f));
                });
                rx.await.map_err(|e| worker_gone(e.to_string()))?
            }
            None => tokio::task::spawn_blocking(move || caught(f))
                .await
                .map_err(|e| worker_gone(e.to_string()))?,
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
